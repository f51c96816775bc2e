"""Checking a bundle run's ``--key value`` overrides against its config files, before any work is done.

``python -m monai.bundle run`` accepts any ``--key value``: MONAI's ``ConfigParser.update`` adds an unknown id
to the config, so a misspelt option (``--epoch 2``) is silently ignored and the run trains with the defaults,
and a wrong type or value (``--epochs two``, ``--batch_size 0``) fails, if at all, after minutes of patch
extraction and deep inside a MONAI traceback. :func:`check_overrides` refuses them up front with one
:class:`OptionError` naming each option, e.g. ``--epoch: unknown option for train.json (did you mean --epochs?)``.

Everything it knows comes from the config files themselves, so every bundle gets the check without code of its
own (bundles/common/runtime.json's ``initialize`` calls :func:`check_cli_overrides`):

* **known options** — every id of the parsed config files (MONAI's ``ConfigParser`` reads and merges them and
  resolves ``%`` macros without instantiating anything), top-level and nested (``validate#inferer#margin``). A
  nested id whose default is a plain reference to another (``train#trainer#max_epochs``: ``"@epochs"``) is
  refused, naming that option: the override would change one use while the run records the other value.
  A new key inside a ``_target_`` component is accepted when the component's callable takes that argument
  (``--optimizer#weight_decay 1e-4``), since MONAI passes it on as a keyword argument; ``**kwargs`` are followed
  to where they go (a base class's ``__init__``, or :data:`_FORWARDED_KWARGS`), so ``--train#dataloader#bogus 1``
  is refused by torch's ``DataLoader`` signature, not after minutes of patch extraction.
* **computed ids are not options** — an id whose value the config computes (a ``$`` expression, or a list/dict
  of ``$``/``@`` values) is refused, naming what to give instead: overriding ``output_dir`` of train.json would
  bypass the run-folder rules (``--run_dir``), ``run_settings`` every settings check, ``checkpoint`` the
  checkpoint resolution (``--ckpt_path``). A rule's ``overridable`` (``true``, or the list of config files —
  e.g. ``evaluate.json`` — of which the job must use one) lets one be overridden (``--device``, ``--amp``, an
  evaluation's ``--output_dir``), typed by the rule's ``type`` or ``check``; a rule's ``instead`` is the text
  naming what to use otherwise. Ids inside an engine's event handlers (``train#handlers#6#final_filename``), the
  ``option_rules`` themselves and ``_``-prefixed ids (comments) are refused too.
* **types** — inferred from the config's default values (bool, int, float, str, list, dict; an int is accepted
  for a float; numbers must be finite). ``@`` references, ``%`` macros and null defaults are not typed (a rule's
  ``type`` types them), and override values written as ``$``/``@``/``%`` are passed through unchecked (they are
  resolved only when the workflow runs), except the text ``true``/``false``: python-fire reads only
  ``True``/``False`` as booleans, and ``bool("false")`` is True. A number given for text (fire reads
  ``--run_dir 2024`` as an int) is refused with the quoting that keeps it text.
* **values** — rules declared per bundle in the config's ``option_rules`` dict, keyed by id:
  ``min``, ``max``, ``greater_than``, ``less_than``, ``multiple_of``, ``choices``, ``min_items``, ``unique_items``, ``items`` (a rule for each
  element of a list), ``type`` (to type a null default or widen an inferred one, e.g. ``"float"`` for a
  count-or-fraction) and ``nullable`` (``true``: ``None`` is a valid value besides the typed ones, e.g.
  ``drw_start=None`` = never from Python; python-fire reads only ``None`` as no value, so the text ``none``/``null``
  is refused with that hint), ``cli_none`` (what to type instead of ``None`` on the command line: MONAI's
  ``create_workflow`` drops every ``None`` it is given, so ``--drw_start None`` would silently keep its default —
  the command line refuses ``None`` where the default is not ``None``, naming ``cli_none`` when the bundle gives
  it). Rules for ids a config does not have are ignored, so one dict can be copied (``%`` macro)
  into a bundle's train, evaluate and inference configs alike.
* **value checks** — a rule's ``check`` names a function (dotted path) that takes the override's value and raises
  :class:`OptionError` for a bad one; it replaces the type and value rules of that id, so the command line gives
  the same answer and message as the Python call (explain.json's ``--methods``: one name or a list).
* **options the run never reads** — an override config (``evaluate.json`` over ``inference.json``) inherits ids it
  does not use: ``--mask`` on the brain ``evaluate.json`` (whose masks come from the datalist) or ``--temperature``
  on the dermoscopy ``calibrate.json`` (which fits it) would be accepted and silently ignored. An id that no ``@`` reference chain reaches from
  ``initialize``, ``run`` or ``finalize`` (:func:`unused_ids`) is refused, with the rule's ``unused`` text as the
  reason when the bundle gives one.
* **options that apply only with another option's value** — a rule's ``only_with`` (``{"loss": ["focal"]}``)
  refuses the override unless every named option, as this run resolves it (its override, else its config
  default), has one of the listed values: ``--focal_gamma 3`` with ``--loss ce`` is read by the loss expression
  yet changes nothing, and would be recorded in ``settings.json`` as if it had. An override equal to its config
  default is let through (it asks for nothing that is lost), so a caller that repeats a run's whole recorded
  settings (retraining) is not refused for them; :func:`inapplicable_overrides` lists what such a caller can drop.
* **a bound set by another option** — a rule's ``at_most`` names another id (``"val_interval": {"at_most":
  "epochs"}``): when either is overridden, the resolved value must not exceed the other's (``--val_interval 5
  --epochs 3`` would never validate: no ``model.pt``).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import inspect
import json
import math
import numbers
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from pydoc import locate
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator, ConfigComponent
from monai.bundle.reference_resolver import ReferenceResolver
from monai.bundle.utils import EXPR_KEY, ID_REF_KEY, ID_SEP_KEY, MACRO_KEY

from mednet.errors import OptionError

__all__ = ["OptionError", "RULES_KEY", "load_config", "config_ids", "unused_ids", "check_overrides", "cli_entry_ids",
           "cli_overrides", "check_cli_overrides", "require_base_config", "inapplicable_overrides", "check_device"]

RULES_KEY = "option_rules"
_UNRESOLVED = (EXPR_KEY, ID_REF_KEY, MACRO_KEY)
_TYPE_WORDS = {"bool": "True or False", "int": "an integer", "float": "a number", "str": "text",
               "list": "a list such as [0, 1]", "dict": "a mapping"}
_MONAI_MAIN = ("monai", "bundle", "__main__.py")
_CLI_COMMANDS = ("run", "run_workflow")
_MISSING = object()


def _config_files(config_file: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The files of a ``config_file`` argument: one path, a list, or MONAI's comma-separated string."""
    if isinstance(config_file, (str, os.PathLike)):
        text = os.fspath(config_file)
        return text.split(",") if "," in text and not Path(text).is_file() else [text]
    return [os.fspath(f) for f in config_file]


def load_config(config_file: str | os.PathLike | Sequence[str | os.PathLike], raw: bool = False) -> dict:
    """The config files merged in order, with ``%`` macros resolved (``raw``: as written) and nothing instantiated
    or evaluated."""
    parser = ConfigParser()
    parser.read_config(f=_config_files(config_file))
    if not raw:
        parser.resolve_macro_and_relative_ids()
    return parser.get()


def config_ids(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every id of ``config`` (MONAI's ``a::b::0`` form, dict keys and list indices) mapped to its value."""
    items: Iterator = iter(config.items()) if isinstance(config, Mapping) else (
        iter(enumerate(config)) if isinstance(config, list) else iter(()))
    ids: dict[str, Any] = {}
    for key, value in items:
        id_ = f"{prefix}{ID_SEP_KEY}{key}" if prefix else str(key)
        ids[id_] = value
        ids.update(config_ids(value, id_))
    return ids


_WORKFLOW_ROOTS = ("initialize", "run", "finalize")
_REFERENCE = re.compile(r"@(\w+)")  # MONAI's own id pattern: an id may start with a digit (@2d_net)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _referenced_ids(value: Any, local_macros: bool = False) -> set[str]:
    """Top-level ids that ``value`` names: ``@id…`` references, and with ``local_macros`` also ``%id…`` macros of
    the same config (not ``%path/file.json::id``)."""
    found = {m for text in _strings(value) for m in _REFERENCE.findall(text)}
    if local_macros:
        for text in _strings(value):
            if text.startswith(MACRO_KEY):
                path, id_ = ConfigParser.split_path_id(text[len(MACRO_KEY):])
                if not path and id_:
                    found.add(ReferenceResolver.normalize_id(id_).split(ID_SEP_KEY)[0])
    return found


def unused_ids(config: Mapping[str, Any], raw: Mapping[str, Any] | None = None,
               entry_ids: Sequence[str] = _WORKFLOW_ROOTS) -> set[str]:
    """Top-level ids of a merged, macro-resolved config that running it never evaluates.

    ``monai.bundle run`` evaluates its entry ids (``initialize``, ``run``, ``finalize``, or the ``--init_id`` /
    ``--run_id`` / ``--final_id`` given); every other id is evaluated only when an ``@id`` (or ``@id#key``)
    reference in an evaluated value names it, or — in ``raw``, the config before its ``%`` macros were resolved —
    a ``%id`` macro copies it (MONAI applies overrides before it resolves macros, so overriding the copied id
    changes the copy). An id outside that closure is dead for this config: overriding it changes nothing.
    Imports, ``option_rules``, ``_``-prefixed ids and MONAI's bundle property ids (``bundle_root``, ``device``, …:
    the workflow may read them by name) are never reported; a config without any entry id reports nothing.
    """
    from monai.bundle.properties import InferProperties, TrainProperties
    from monai.utils import BundlePropertyConfig

    roots = [root for root in entry_ids if root in config]
    if not roots:
        return set()
    raw = raw or {}
    references = {key: _referenced_ids(value) | _referenced_ids(raw.get(key), local_macros=True)
                  for key, value in config.items()}
    reached: set[str] = set()
    todo = list(roots)
    while todo:
        key = todo.pop()
        if key not in reached and key in config:
            reached.add(key)
            todo.extend(references[key])
    properties = {spec.get(BundlePropertyConfig.ID, name).split(ID_SEP_KEY)[0]
                  for table in (TrainProperties, InferProperties) for name, spec in table.items()}
    return {key for key in config if key not in reached and not key.startswith(("_", "imports")) and key != RULES_KEY
            and key not in properties}


def _unresolved(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_UNRESOLVED)


def _inferred_type(default: Any) -> str | None:
    if default is None or _unresolved(default):
        return None
    for name, types in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", (list, tuple)),
                        ("dict", Mapping)):
        if isinstance(default, types):
            return name
    return None


def _has_type(value: Any, type_name: str) -> bool:
    if type_name in ("int", "float") and isinstance(value, bool):
        return False
    types = {"bool": bool, "int": numbers.Integral, "float": numbers.Real, "str": (str, os.PathLike),
             "list": (list, tuple), "dict": Mapping}
    if type_name not in types:
        raise ValueError(f"{RULES_KEY}: unknown type {type_name!r}; use one of {', '.join(types)}")
    return isinstance(value, types[type_name])


def _unmet_rule(value: Any, rule: Mapping[str, Any]) -> str | None:
    """The requirement of ``rule`` (see the module docstring) that ``value`` fails, e.g. ``"must be ≥ 1"``."""
    if "type" in rule and not _has_type(value, rule["type"]):
        return f"must be {_TYPE_WORDS[rule['type']]}"
    if "choices" in rule and value not in rule["choices"]:
        return f"must be one of {', '.join(map(repr, rule['choices']))}"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):  # 1e999 reaches fire as inf
            return "must be a finite number"
        for key, text, fails in (("min", "≥", value < rule.get("min", value)),
                                 ("greater_than", ">", "greater_than" in rule and value <= rule["greater_than"]),
                                 ("max", "≤", value > rule.get("max", value)),
                                 ("less_than", "<", "less_than" in rule and value >= rule["less_than"])):
            if fails:
                return f"must be {text} {rule[key]}"
        if "multiple_of" in rule and value % rule["multiple_of"]:
            return f"must be a multiple of {rule['multiple_of']}"
    if isinstance(value, (list, tuple)):
        if len(value) < rule.get("min_items", 0):
            return f"needs at least {rule['min_items']} item(s)"
        if rule.get("unique_items") and len({repr(v) for v in value}) < len(value):
            return "must not repeat an item"
        unmet = [_unmet_rule(item, rule["items"]) for item in value] if "items" in rule else []
        if any(unmet):
            return "every item " + next(u for u in unmet if u)
    return None


#: classes whose ``**kwargs`` go not to their base class but to another callable (minus the names they set
#: themselves): the project's whole-volume inferer builds one :class:`~mednet.inference.BatchedSliceInferer` per
#: view with them (setting ``spatial_dim``), ignite's progress bar passes them to its ``tqdm`` bar
_FORWARDED_KWARGS: dict[str, tuple[str, frozenset[str]]] = {
    "mednet.inference.view_aggregation.ViewAggregationInferer": (
        "mednet.inference.slice_inferer.BatchedSliceInferer", frozenset({"spatial_dim"})),
    "ignite.handlers.tqdm_logger.ProgressBar": ("tqdm.autonotebook.tqdm", frozenset({"iterable", "total"})),
}
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _accepted_keywords(target: Any) -> set[str] | None:
    """Keyword arguments ``target`` (a class or function) accepts; None when any name may go.

    ``**kwargs`` are followed to where they go, so that a misspelt argument of a component is refused before any
    work rather than after minutes of patch extraction: for a class, to the next ``__init__`` of its MRO (the
    ``super().__init__(**kwargs)`` pattern: MONAI's ``DataLoader`` → torch's, ``SliceInferer`` →
    ``SlidingWindowInferer``, the project's ``ProgressBar`` → ignite's), or to the callable
    :data:`_FORWARDED_KWARGS` names. A plain function taking ``**kwargs`` cannot be followed: any name goes.
    """
    names: set[str] = set()
    if not inspect.isclass(target):
        params = inspect.signature(target).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return None
        return {n for n, p in params.items() if p.kind in _NAMED}
    for cls in target.__mro__:
        if "__init__" not in vars(cls):
            continue
        if cls is object:  # object.__init__ takes no argument
            return names
        params = inspect.signature(cls.__init__).parameters
        names |= {n for n, p in params.items() if p.kind in _NAMED and n != "self"}
        forwarded = _FORWARDED_KWARGS.get(f"{cls.__module__}.{cls.__qualname__}")
        if forwarded is not None:
            destination = _accepted_keywords(locate(forwarded[0]))
            return None if destination is None else names | (destination - forwarded[1])
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return names
    return names


def _component_arguments(component: Mapping) -> set[str] | None:
    """Argument names of a ``_target_`` component's callable (its ``**kwargs`` followed, see
    :func:`_accepted_keywords`); None when any name goes or the callable is unknown."""
    try:
        target = ConfigComponent(config=dict(component), locator=ComponentLocator()).resolve_module_name()
        arguments = _accepted_keywords(locate(target) if isinstance(target, str) else target)
    except Exception:  # an unresolvable target fails at instantiation with MONAI's own message
        return None
    return None if arguments is None else arguments | set(ConfigComponent.non_arg_keys)


def _display(id_: str) -> str:
    """An id as users type it on the command line (``#``, MONAI's historical separator, which it still accepts)."""
    return "--" + id_.replace(ID_SEP_KEY, "#")


def _unknown_problem(id_: str, ids: Mapping[str, Any], config_name: str) -> str | None:
    """None if ``id_`` is an argument the enclosing component takes, else "unknown option" with the nearest id."""
    ids = {k: v for k, v in ids.items() if not k.startswith(RULES_KEY + ID_SEP_KEY)}  # never suggest a rule
    parent, _, last = id_.rpartition(ID_SEP_KEY)
    if parent in ids and isinstance(ids[parent], Mapping):
        candidates = set(ids[parent])
        if "_target_" in ids[parent]:
            arguments = _component_arguments(ids[parent])
            if arguments is None or last in arguments:
                return None
            candidates |= arguments
        match = difflib.get_close_matches(last, sorted(candidates), n=1)
        suggestion = f"{parent}{ID_SEP_KEY}{match[0]}" if match and parent else (match[0] if match else None)
    else:
        match = difflib.get_close_matches(id_, sorted(ids), n=1)
        suggestion = match[0] if match else None
    if suggestion is None:  # e.g. --max_epochs given at the top level: the nearest nested id by its last part
        by_last: dict[str, str] = {}
        for known in ids:
            by_last.setdefault(known.rpartition(ID_SEP_KEY)[2], known)
        match = difflib.get_close_matches(last, sorted(by_last), n=1)
        suggestion = by_last[match[0]] if match else None
    hint = f" (did you mean {_display(suggestion)}?)" if suggestion else ""
    return f"unknown option for {config_name}{hint}"


def _checked_problem(check: str, value: Any, id_: str) -> str | None:
    """What the value check ``check`` (a dotted function name) says of ``value``, or None when it passes."""
    function = locate(check)
    if not callable(function):
        raise ValueError(f"{RULES_KEY}: {_display(id_)}'s check {check!r} is not a function")
    try:
        function(value)
    except OptionError as error:
        return "; ".join(error.problems.values())
    except TypeError:  # a value of a kind the function does not take at all (e.g. a number for a list of names)
        return f"is not accepted by {check}, got {value!r}"
    return None


def check_device(value: Any) -> None:
    """The value check of ``--device`` (the bundles' ``option_rules``): a device name torch knows (``cpu``,
    ``cuda``, ``cuda:1``) or a ``torch.device``; anything else would fail only when the network is moved.

    Raises:
        OptionError: naming ``--device``.
    """
    import torch

    if isinstance(value, torch.device):
        return
    problem = f"expects a device such as cpu, cuda or cuda:1, got {value!r}"
    if not isinstance(value, str):
        raise OptionError({"--device": problem})
    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        raise OptionError({"--device": problem}) from None


def _referenced_option(id_: str, default: Any) -> str | None:
    """The id a nested id's default plainly refers to (``train#trainer#max_epochs`` → ``epochs`` for
    ``"@epochs"``), else None: overriding the nested id would change that one use only, while the run records (and
    a resume checks) the other id's value — ``--train#trainer#max_epochs 3`` trained 3 epochs under a cosine
    schedule over ``--epochs``' 20, recorded as 20."""
    if ID_SEP_KEY not in id_ or not isinstance(default, str):
        return None
    match = re.fullmatch(r"@([\w#:]+)", default.strip())
    return ReferenceResolver.normalize_id(match.group(1)) if match else None


_HANDLER_KEYS = ("handlers", "train_handlers", "val_handlers")


def _in_handlers(id_: str) -> bool:
    """``id_`` is, or is inside, an engine's event-handler list (``train#handlers#6#final_filename``)."""
    return any(part in _HANDLER_KEYS for part in id_.split(ID_SEP_KEY))


def _computed(default: Any) -> bool:
    """A config value the config computes rather than sets: a ``$`` expression, or a list/dict holding ``$``
    expressions or ``@`` references (``run_settings``: what settings.json records, built from the options)."""
    if isinstance(default, str):
        return default.startswith(EXPR_KEY)
    return isinstance(default, (Mapping, list)) and any(s.startswith((EXPR_KEY, ID_REF_KEY)) for s in _strings(default))


#: an option whose default is the named run's recorded value (``mednet.runs.run_default``): its fallback, for --help
_RUN_DEFAULT = re.compile(r"^\$mednet\.runs\.run_default\(@ckpt_path, '[^']+', (.+)\)$")
#: options named as what to set instead of a computed id
_MAX_SUGGESTED = 8


def _overridable(rule: Mapping[str, Any], job: Sequence[str]) -> bool:
    """The rule lets a computed id be overridden in this job: ``"overridable": true``, or a list of config files
    (e.g. ``evaluate.json``) of which the job's files (``job``: their names; inference.json + evaluate.json, with a
    site's own override file after them too) hold one."""
    allowed = rule.get("overridable")
    return allowed is True or isinstance(allowed, list) and any(name in allowed for name in job)


def _computed_problem(id_: str, default: Any, ids: Mapping[str, Any], rules: Mapping[str, Any], config_name: str,
                      job: Sequence[str]) -> str:
    """Why a computed id (:func:`_computed`) is not an option, and what to give instead: the rule's ``instead``
    text, else the options its value refers to directly."""
    instead = rules.get(id_, {}).get("instead")
    if not instead:
        # the options it is computed from, followed through the computed ids it refers to (--network: from
        # network_def: --variant, --base_channels, …), in the order they appear
        options: list[str] = []
        seen = {id_}
        pending = [default]
        while pending and len(options) < _MAX_SUGGESTED:
            value = pending.pop(0)
            for ref in (m for text in _strings(value) for m in _REFERENCE.findall(text)):
                if ref in seen or ref not in ids or ref.startswith("_") or ref == RULES_KEY:
                    continue
                seen.add(ref)
                if not _computed(ids[ref]) or _overridable(rules.get(ref, {}), job):
                    options.append(ref)
                else:
                    pending.append(ids[ref])
        instead = f"set {', '.join(map(_display, options[:_MAX_SUGGESTED]))} instead" if options else ""
    return f"is computed by {config_name}, not an option" + (f"; {instead}" if instead else "")


def _option_problem(key: str, value: Any, ids: Mapping[str, Any], rules: Mapping[str, Any],
                    config_name: str, cli: bool = False, job: Sequence[str] = ()) -> str | None:
    id_ = ReferenceResolver.normalize_id(key)
    top = id_.split(ID_SEP_KEY)[0]
    if top == "_meta_":  # metadata (meta_file) ids: not part of the configs read here
        return None
    if top == RULES_KEY:  # MONAI would apply it, and the run would go unchecked or be checked by other rules
        return f"changes {config_name}'s checks of the options, not an option"
    if top.startswith("_"):  # the configs' comments (_comment_run) and private ids
        return f"is a comment of {config_name}, not an option"
    default = ids.get(id_, _MISSING)
    source = None if default is _MISSING else _referenced_option(id_, default)
    if source is not None and not _in_handlers(source) and _computed(ids.get(source)) and not _overridable(
            rules.get(source, {}), job):  # --train#trainer#network: --network is computed too
        return (f"is {_display(source)}'s value in this config, which "
                + _computed_problem(source, ids[source], ids, rules, config_name, job))
    if source is not None and not _in_handlers(source):
        return (f"is {_display(source)}'s value in this config; give {_display(source)} instead (what the run "
                "records in settings.json and checks on resume, and every other place that uses it, e.g. the LR "
                "schedule, follows it)")
    if _in_handlers(id_) or source is not None:
        # e.g. --train#handlers#6#final_filename model.pt: the final weights would overwrite the best model.pt
        return ("is part of an engine's event handlers (checkpoints, reports, logs), which the bundle sets; "
                "not an option")
    if default is _MISSING:
        return _unknown_problem(id_, ids, config_name)
    rule = rules.get(id_, {})
    if _computed(default) and not _overridable(rule, job):
        return _computed_problem(id_, default, ids, rules, config_name, job)
    if _unresolved(value):
        return None
    check = rule.get("check")
    if check:
        return _checked_problem(check, value, id_)
    type_name = rule.get("type") or _inferred_type(default)
    if value is None and cli and default is not None and not (_computed(default) and rule.get("nullable") is True):
        # (a computed default that may be None — --cifar_stem from the run — is checked against the run instead)
        # monai.bundle's create_workflow drops None-valued arguments (update_kwargs(ignore_none=True)): the run
        # would keep the default while the command line asked for None
        instead = f"; give {_display(id_)} {rule['cli_none']} instead" if "cli_none" in rule else ""
        return (f"MONAI's command line drops None values, so the run would keep the default {default!r}"
                f"{instead}")
    if value is None and (default is None or rule.get("nullable") is True):
        return None
    if rule.get("nullable") is True and isinstance(value, str) and value.lower() in ("none", "null"):
        # fire reads only None as Python's None: "none" / "null" arrive as text
        return f"got the text {value!r}; write None for no value"
    if type_name is None and isinstance(value, str) and value.lower() in ("true", "false"):
        # fire reads only True/False as booleans: "false" arrives as text, and bool("false") is True
        return f"got the text {value!r}; write {value.capitalize()} for a yes/no value"
    if type_name and not _has_type(value, type_name):
        shown = "" if default is None or _unresolved(default) else f" (default {default!r})"
        quote = ""
        if type_name == "str" and isinstance(value, numbers.Number) and not isinstance(value, bool):
            # fire reads --run_dir 2024 as a number: quoted twice, it stays the text
            quote = f"; quote a name that reads as a number: {_display(id_)} \"'{value}'\""
        return f"expects {_TYPE_WORDS[type_name]}{shown}, got {value!r}{quote}"
    unmet = _unmet_rule(value, {k: v for k, v in rule.items() if k != "type"})
    return f"{unmet}, got {value!r}" if unmet else None


def check_overrides(config_file: str | os.PathLike | Sequence[str | os.PathLike],
                    overrides: Mapping[str, Any], entry_ids: Sequence[str] = _WORKFLOW_ROOTS,
                    cli: bool = False) -> None:
    """Refuse unknown overrides, overrides of the wrong type or value, and overrides the run never reads.

    Args:
        config_file: the bundle config (or configs, merged in order) the overrides are for.
        overrides: ``{"epochs": 2, "validate#inferer#margin": 8, ...}`` as MONAI receives them (values already
            parsed, as python-fire does on the command line).
        entry_ids: the ids the run evaluates (``monai.bundle run``'s ``--init_id`` / ``--run_id`` /
            ``--final_id``), from which :func:`unused_ids` follows the references.
        cli: the overrides come from ``python -m monai.bundle run``, which drops ``None`` values: ``None`` is
            refused where the default is not ``None`` (see the module docstring's ``cli_none``).

    Raises:
        OptionError: naming every bad option, what is wrong and, for unknown ones, the nearest valid name.
    """
    if not overrides:
        return
    config = load_config(config_file)
    ids = config_ids(config)
    rules = {ReferenceResolver.normalize_id(k): v for k, v in (config.get(RULES_KEY) or {}).items()
             if isinstance(v, Mapping)}  # not its "_comment"
    names = [Path(f).name for f in _config_files(config_file)]
    config_name = " + ".join(names)
    problems = {}
    for key, value in overrides.items():
        problem = _option_problem(str(key), value, ids, rules, config_name, cli=cli, job=tuple(names))
        if problem:
            problems[f"--{key}"] = problem
    # the run's reference graph with the valid overrides in place: an override may itself reference an id
    with_overrides = ConfigParser(config=copy.deepcopy(config))
    for key, value in overrides.items():
        if f"--{key}" not in problems:
            with contextlib.suppress(Exception):  # a new argument of a component: nothing to follow
                with_overrides[str(key)] = value
    unused = unused_ids(with_overrides.get(), raw=load_config(config_file, raw=True), entry_ids=entry_ids)
    for key in overrides:
        top = ReferenceResolver.normalize_id(str(key)).split(ID_SEP_KEY)[0]
        if f"--{key}" not in problems and top in unused:
            reason = rules.get(top, {}).get("unused") or "it is an option of another of this bundle's configs"
            problems[f"--{key}"] = f"not used by {config_name} ({reason}); it would be ignored"
    for key, value in overrides.items():
        id_ = ReferenceResolver.normalize_id(str(key))
        if f"--{key}" in problems or _same_value(value, ids.get(id_, _MISSING)):
            continue
        problem = _only_with_problem(id_, overrides, ids, rules)
        if problem:
            problems[f"--{key}"] = problem
    given = {ReferenceResolver.normalize_id(str(k)): str(k) for k in overrides}
    for id_, rule in rules.items():
        bound = rule.get("at_most") if isinstance(rule, Mapping) else None
        if not isinstance(bound, str) or not ({id_, bound} & set(given)):
            continue
        value, limit = (overrides[given[i]] if i in given else ids.get(i, _MISSING) for i in (id_, bound))
        numbers_ = [v for v in (value, limit) if isinstance(v, numbers.Real) and not isinstance(v, bool)]
        key = given.get(id_) or given[bound]
        if any(f"--{given[i]}" in problems for i in (id_, bound) if i in given):
            continue  # a bad value is reported once, by its own rule
        if len(numbers_) == 2 and value > limit:
            problems[f"--{key}"] = (f"{_display(id_)} {value} is more than {_display(bound)} {limit}; it must be "
                                    f"at most {limit}")
    if problems:
        raise OptionError({f"--{k}": problems[f"--{k}"] for k in overrides if f"--{k}" in problems})


def _same_value(value: Any, default: Any) -> bool:
    """``value`` equals the config default ``default`` (a list and a tuple with the same items are equal)."""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(default, tuple):
        default = list(default)
    return type(value) is type(default) and value == default or (
        isinstance(value, numbers.Real) and isinstance(default, numbers.Real)
        and not isinstance(value, bool) and not isinstance(default, bool) and value == default)


def inapplicable_overrides(config_file: str | os.PathLike | Sequence[str | os.PathLike],
                           overrides: Mapping[str, Any]) -> dict[str, str]:
    """The overrides (``{key: reason}``) that the config's ``only_with`` rules say this run would ignore, whatever
    their value — e.g. ``focal_gamma`` when ``overrides`` (or the config) sets ``loss`` to ``ce``."""
    config = load_config(config_file)
    ids = config_ids(config)
    rules = {ReferenceResolver.normalize_id(k): v for k, v in (config.get(RULES_KEY) or {}).items()
             if isinstance(v, Mapping)}
    found = {}
    for key in overrides:
        problem = _only_with_problem(ReferenceResolver.normalize_id(str(key)), overrides, ids, rules)
        if problem:
            found[str(key)] = problem
    return found


def _only_with_problem(id_: str, overrides: Mapping[str, Any], ids: Mapping[str, Any],
                       rules: Mapping[str, Any]) -> str | None:
    """The unmet ``only_with`` condition of the override of ``id_`` (see the module docstring), or None."""
    conditions = rules.get(id_, {}).get("only_with")
    if not isinstance(conditions, Mapping):
        return None
    given = {ReferenceResolver.normalize_id(str(k)): v for k, v in overrides.items()}
    for other, allowed in conditions.items():
        value = given.get(other, ids.get(other, _MISSING))
        if value is _MISSING or _unresolved(value):
            continue  # not in this config, or known only when the run resolves it
        if value not in allowed:
            if list(allowed) == [None]:  # e.g. a patch option when the patches come from --patches_file
                return f"applies only without --{other} (this run has --{other} {value}); it would be ignored"
            wanted = " or ".join(f"--{other} {v}" for v in allowed)
            return f"applies only with {wanted}, and this run has --{other} {value}; it would be ignored"
    return None


def _run_arguments() -> set[str]:
    """Names that ``monai.bundle run`` / ``run_workflow`` consume themselves (not config overrides).

    Read from the signatures that receive them (the CLI functions, ``create_workflow``, ``ConfigWorkflow``) so
    that a MONAI release adding an argument does not turn it into an "unknown option".
    """
    from monai.bundle import ConfigWorkflow, scripts

    names: set[str] = set()
    for fn in (scripts.run, scripts.run_workflow, scripts.create_workflow, ConfigWorkflow.__init__):
        names |= {n for n, p in inspect.signature(fn).parameters.items()
                  if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names


def cli_overrides(argv: Sequence[str]) -> tuple[Any, dict[str, Any]] | None:
    """``(config_file, overrides)`` of a ``python -m monai.bundle run …`` command line, else None.

    The arguments are split and parsed by python-fire's own functions — the ones ``python -m monai.bundle``
    runs — so ``--key value``, ``--key=value``, bare boolean flags, negative numbers and value types
    (``2`` → int, ``2.5`` → float, ``[0, 1]`` → list) are read exactly as MONAI receives them. Defaults from
    ``--args_file`` (JSON/YAML) come first, command-line values override them, as in MONAI's ``update_kwargs``.
    """
    if len(argv) < 2 or Path(argv[0]).parts[-3:] != _MONAI_MAIN or argv[1] not in _CLI_COMMANDS:
        return None
    import fire.core
    import fire.inspectutils
    import fire.parser
    from monai.bundle import scripts

    args, _ = fire.parser.SeparateFlagArgs(list(argv[2:]))
    if "-" in args:  # fire's separator: what follows is for the command's result, not for `run`
        args = args[: args.index("-")]
    spec = fire.inspectutils.GetFullArgSpec(getattr(scripts, argv[1]))
    raw, _, _ = fire.core._ParseKeywordArgs(args, spec)
    values = {k: fire.parser.DefaultParseValue(v) for k, v in raw.items()}
    if values.get("args_file"):
        values = {**ConfigParser.load_config_file(values["args_file"]), **values}
    if values.get("config_file") is None:
        return None  # MONAI itself reports the missing config
    names = _run_arguments()
    return values["config_file"], {k: v for k, v in values.items() if k not in names}


def cli_entry_ids(argv: Sequence[str]) -> tuple[str, str, str]:
    """The ids a ``python -m monai.bundle run`` command line evaluates: ``--init_id``, ``--run_id``, ``--final_id``
    (default ``initialize``, ``run``, ``finalize``), read as :func:`cli_overrides` reads the rest."""
    import fire.parser

    args, _ = fire.parser.SeparateFlagArgs(list(argv[2:]))
    given: dict[str, str] = {}
    for i, arg in enumerate(args):
        name, _, value = arg.lstrip("-").partition("=")
        if arg.startswith("--") and name in ("init_id", "run_id", "final_id"):
            given[name] = value if value else (args[i + 1] if i + 1 < len(args) else "")
    return (given.get("init_id") or _WORKFLOW_ROOTS[0], given.get("run_id") or _WORKFLOW_ROOTS[1],
            given.get("final_id") or _WORKFLOW_ROOTS[2])


def check_cli_overrides(argv: Sequence[str] | None = None) -> None:
    """Run :func:`check_overrides` on the command line when this is ``python -m monai.bundle run``; else nothing.

    Called as the first step of a bundle's ``initialize`` (after the error hook): MONAI offers no hook between
    parsing its arguments and running the config, and at that point nothing has been read or instantiated.
    Python callers (:func:`mednet.app.bundles.run_bundle`) call :func:`check_overrides` themselves.
    """
    argv = sys.argv if argv is None else argv
    parsed = cli_overrides(argv)
    if parsed is None:
        return
    for key in ("help", "h"):
        if parsed[1].get(key) is False:  # --help False: no help asked for
            del parsed[1][key]
    if parsed[1].get("help") is True or parsed[1].get("h") is True:
        # MONAI's `run` has no help of its own for a config: list the options instead of refusing --help
        print(option_summary(parsed[0]))
        raise SystemExit(0)
    check_overrides(*parsed, entry_ids=cli_entry_ids(argv), cli=True)


def option_summary(config_file: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
    """The options of a bundle job, one ``--name default`` line each (choices and bounds from the option rules),
    for ``--help``: the top-level ids a user sets — plain values and the computed ones a rule lets be overridden —
    not components, computed values or comments."""
    config = load_config(config_file)
    rules = {k: v for k, v in (config.get(RULES_KEY) or {}).items() if isinstance(v, Mapping)}
    names = tuple(Path(f).name for f in _config_files(config_file))
    unused = set(unused_ids(config, raw=load_config(config_file, raw=True)))
    lines = [f"options of {' + '.join(names)} (--name value; nested ids such as --optimizer#weight_decay too):"]
    for key, value in config.items():
        key = str(key)
        if key.startswith("_") or key == RULES_KEY or key in _WORKFLOW_ROOTS:
            continue
        rule = rules.get(key, {})
        if _computed(value) and not _overridable(rule, names):
            continue
        if isinstance(value, Mapping) or (isinstance(value, list) and any(isinstance(v, Mapping) for v in value)):
            continue  # a component or a list of them
        if key in unused:
            continue  # inherited from a shared file, never read by this job (refused if given)
        fallback = _RUN_DEFAULT.match(value) if isinstance(value, str) else None
        shown = f"(the --ckpt_path run's, else {fallback.group(1)})" if fallback else "(computed unless given)" if _computed(value) else (
            value if isinstance(value, str) else repr(value) if value is None or isinstance(value, bool)
            else json.dumps(value))
        notes = [f"{k} {v}" for k, v in rule.items() if k in ("choices", "min", "max", "less_than", "only_with")]
        lines.append(f"  --{key} {shown}" + (f"   [{'; '.join(notes)}]" if notes else ""))
    lines.append("The bundle's docs/README.md says what each does.")
    return "\n".join(lines)


def require_base_config(base: str, override: str, argv: Sequence[str] | None = None) -> None:
    """Refuse ``python -m monai.bundle run`` of an override config (``evaluate.json``) without its base.

    As in the MONAI model zoo, ``evaluate.json`` holds only what evaluation changes in ``inference.json``;
    the two are merged in order: ``--config_file "['…/inference.json','…/evaluate.json']"``. Given alone, MONAI
    would fail on the first id the override does not define; this says what to run instead. Python callers
    (:func:`mednet.app.bundles.run_bundle`) pass the list themselves, and nothing is checked for them.

    Raises:
        OptionError: the command line's ``--config_file`` lists ``override`` but no file named like ``base``.
    """
    parsed = cli_overrides(sys.argv if argv is None else argv)
    if parsed is None:
        return
    names = [Path(f).name for f in _config_files(parsed[0])]
    if Path(base).name not in names:
        given = _config_files(parsed[0])[-1]
        folder = Path(given).parent
        raise OptionError({"--config_file": (
            f"{Path(override).name} is an override of {Path(base).name}; run both, merged in order: "
            f"--config_file \"['{folder / Path(base).name}','{folder / Path(override).name}']\"")})
