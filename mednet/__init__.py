"""mednet: medical-imaging pipelines on MONAI, PyTorch and Ignite, shipped as MONAI bundles."""

__version__ = "0.1.0"
