"""mednet: medical-imaging pipelines on MONAI, PyTorch and Ignite, shipped as MONAI bundles."""

import logging as _logging
import warnings as _warnings

__version__ = "0.1.0"

# MONAI 1.6 builds its GPU DICOM decoder (nvImageCodec) with every LoadImage and says, on every machine without it,
# that it is missing: three lines above every command's output and above the one-line error. mednet reads DICOM
# with its own SimpleITK reader; the missing GPU decoder changes nothing here.
_logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(_logging.ERROR)
_warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register")
