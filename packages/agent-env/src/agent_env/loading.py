"""`load_object`: turn a config reference such as `workflow.py->MathAgentWorkflow` into the Python object.

Accepted forms (the separator is `:` or the tutorial's `->`; the attribute may be dotted, `Outer.Inner`):

    pkg.module:Attr             an importable module
    pkg.module->Attr            the same, AgentJet / tutorial spelling
    path/to/file.py:Attr        a Python file (absolute, or relative to `base_dir`)
    file.py->Attr               the same, tutorial spelling

Resolution rules (the contract):

- A reference is a *file* reference when its left side ends in `.py` or contains a path separator;
  otherwise it is a *module* reference.
- A relative file path is tried against `base_dir` (the YAML file's directory) and then against the
  current directory; the first that exists wins. With no `base_dir`, only the current directory is tried.
- A module reference that cannot be imported, where a file `a/b.py` for `a.b` exists under `base_dir` or
  the current directory, is loaded from that file (AgentJet resolves `math_agent.math_agent->X` this way,
  from the directory it was started in).
- A file is imported once per process under a stable, unique module name derived from its absolute
  path (`_agent_env_file_<stem>_<hash>`), and registered in `sys.modules`. Two `workflow.py` files in
  different directories never clash, loading the same file twice returns the same objects, and objects
  defined in it pickle within the process (another process must `load_object` the same file first).
- `sys.path` is changed only when needed: if the file imports a module that is a sibling of it
  (`helper.py` or a package `helper/` in the same directory), the file's directory is put first on
  `sys.path` before the file runs, as `python file.py` would. Files without sibling imports leave
  `sys.path` untouched. Relative imports (`from . import x`) are not supported in a loaded file.
- `ALIASES` maps the tutorial's references to ours, e.g. its math judge to `agent_env.judges.math`.

Every failure raises `LoadError` (an `ImportError`) whose message says what was tried and what to do.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.util
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

__all__ = ["ALIASES", "LoadError", "ObjectSpec", "lazy_exports", "load_object", "parse_spec"]

ALIASES: dict[str, str] = {
    "tutorial.example_math_agent.math_answer_as_judge->MathAnswerAsJudge": "agent_env.judges.math:MathAnswerAsJudge",
    "tutorial.example_math_agent.math_answer_as_judge:MathAnswerAsJudge": "agent_env.judges.math:MathAnswerAsJudge",
}
"""Tutorial references that name code we ship under another module: reference -> our reference."""

# Import names whose PyPI distribution has another name (for "install X" hints).
_DISTRIBUTION_OF_IMPORT = {
    "yaml": "pyyaml",
    "sklearn": "scikit-learn",
    "cv2": "opencv-python",
    "PIL": "pillow",
    "bs4": "beautifulsoup4",
    "dotenv": "python-dotenv",
    "attr": "attrs",
    "dateutil": "python-dateutil",
    "google.protobuf": "protobuf",
    "ajet": "agent-env",
    "agent_env": "agent-env",
    "agent_rl": "agent-rl",
    "agent_cli": "agent-cli",
}

_FORMS = (
    "Accepted forms: `pkg.module:Attr`, `pkg.module->Attr`, `path/to/file.py:Attr`, `file.py->Attr` "
    "(relative file paths are relative to the config file's directory)."
)
_IDENTIFIER_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_LOCK = threading.RLock()


class LoadError(ImportError):
    """A reference could not be resolved; the message says what was tried and what to do."""


@dataclass(frozen=True)
class ObjectSpec:
    """A parsed reference: `target` (module name or file path as written), `attr` (possibly dotted) and `kind`."""

    target: str
    attr: str
    kind: Literal["module", "file"]


def lazy_exports(
    package: str, exports: Mapping[str, str], names: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's `__getattr__` and `__dir__` for names that load their module on first use: `exports` maps each
    lazy name to its module, and the value is kept in the package once loaded; `dir()` lists `names`.

        __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return list(names)

    return __getattr__, __dir__


def parse_spec(spec: str) -> ObjectSpec:
    """Parse a reference without importing anything.

    Raises `LoadError` when the text is not one of the accepted forms (see the module docstring).
    """
    if not isinstance(spec, str):
        raise LoadError(
            f"Expected a reference string such as `pkg.module:Attr`, got {spec!r} ({type(spec).__name__})."
        )
    text = spec.strip()
    if "->" in text:
        target, _, attr = text.rpartition("->")
    elif ":" in text:
        target, _, attr = text.rpartition(":")
    else:
        raise LoadError(
            f"Reference {spec!r} has no `:` or `->` between the module/file and the attribute. {_FORMS}"
        )
    target, attr = target.strip(), attr.strip()
    if not target:
        raise LoadError(f"Reference {spec!r} names no module or file before the separator. {_FORMS}")
    if not _IDENTIFIER_PATH.match(attr):
        raise LoadError(
            f"Reference {spec!r}: {attr!r} is not a Python attribute name (expected e.g. `MyWorkflow` or "
            f"`Outer.Inner`). {_FORMS}"
        )
    if target.endswith(".py") or "/" in target or "\\" in target:
        return ObjectSpec(target=target, attr=attr, kind="file")
    if not _IDENTIFIER_PATH.match(target):
        raise LoadError(
            f"Reference {spec!r}: {target!r} is neither a dotted module name nor a path ending in `.py`. {_FORMS}"
        )
    return ObjectSpec(target=target, attr=attr, kind="module")


def load_object(spec: str, base_dir: str | Path | None = None) -> Any:
    """Import and return the object that `spec` names.

    `base_dir` is the directory relative file paths are resolved against (the YAML file's directory);
    the current directory is the fallback. Tutorial references listed in `ALIASES` are first rewritten
    to ours. Raises `LoadError` on a malformed reference, a missing file, a module that cannot be
    imported (or raises while importing), and a missing attribute.
    """
    original = spec.strip() if isinstance(spec, str) else spec
    alias_note = ""
    if isinstance(original, str) and original in ALIASES:
        spec = ALIASES[original]
        alias_note = f" ({original!r} is an alias of {spec!r})"
    parsed = parse_spec(spec)
    base = Path(base_dir).expanduser().resolve() if base_dir is not None else None
    with _LOCK:
        if parsed.kind == "file":
            module = _import_file(_find_file(parsed.target, base, spec), spec)
        else:
            module = _import_module(parsed.target, base, spec, alias_note)
    return _get_attr(module, parsed, spec)


def _candidate_dirs(base: Path | None) -> list[Path]:
    cwd = Path.cwd().resolve()
    dirs = [base] if base is not None else []
    return dirs + ([cwd] if cwd not in dirs else [])


def _find_file(target: str, base: Path | None, spec: str) -> Path:
    path = Path(target).expanduser()
    if path.is_absolute():
        if path.is_file():
            return path.resolve()
        raise LoadError(f"Reference {spec!r}: file {path} does not exist. Check the path.")
    tried = []
    for directory in _candidate_dirs(base):
        candidate = (directory / path).resolve()
        if candidate.is_file():
            return candidate
        label = "the config file's directory" if directory == base else "the current directory"
        tried.append(f"  {candidate}  (relative to {label} {directory})")
    hint = "" if target.endswith(".py") else " A Python file reference must end in `.py`."
    raise LoadError(
        f"Reference {spec!r}: file {target!r} not found. Tried:\n" + "\n".join(tried) + "\n"
        "Put the file next to the config file, or give a path relative to it or an absolute path." + hint
    )


def _file_module_name(path: Path) -> str:
    stem = re.sub(r"\W", "_", path.stem)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return f"_agent_env_file_{stem}_{digest}"


def _import_file(path: Path, spec: str) -> ModuleType:
    name = _file_module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise LoadError(
            f"Reference {spec!r}: {path} has a syntax error at line {exc.lineno}: {exc.msg}. Fix the file."
        ) from exc
    except OSError as exc:
        raise LoadError(f"Reference {spec!r}: cannot read {path}: {exc}.") from exc
    _add_dir_for_sibling_imports(tree, path.parent)
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise LoadError(f"Reference {spec!r}: Python cannot load {path} as a module (is it a `.py` file?).")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if not isinstance(exc, Exception):
            raise
        raise _import_failure(spec, str(path), exc) from exc
    return module


def _add_dir_for_sibling_imports(tree: ast.Module, directory: Path) -> None:
    """Put `directory` first on `sys.path` if the module imports a module or package that lives in it."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    siblings = [
        name
        for name in names
        if (directory / f"{name}.py").is_file() or (directory / name / "__init__.py").is_file()
    ]
    if siblings and str(directory) not in sys.path:
        sys.path.insert(0, str(directory))


def _import_module(name: str, base: Path | None, spec: str, alias_note: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            relative = Path(*name.split(".")).with_suffix(".py")
            for directory in _candidate_dirs(base):
                if (directory / relative).is_file():
                    return _import_file((directory / relative).resolve(), spec)
            places = " or ".join(str(d / relative) for d in _candidate_dirs(base))
            raise LoadError(
                f"Reference {spec!r}{alias_note}: module {name!r} cannot be imported (no module named "
                f"{missing!r}) and there is no file {places}. Check the spelling, install the package that "
                f"provides it, or write the reference as a file path, e.g. `{relative}:{parse_spec(spec).attr}`.",
                name=name,
            ) from exc
        raise _import_failure(spec, f"module {name!r}", exc) from exc
    except Exception as exc:
        raise _import_failure(spec, f"module {name!r}", exc) from exc


def _import_failure(spec: str, what: str, exc: Exception) -> LoadError:
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        missing = exc.name
        top = missing.partition(".")[0]
        dist = _DISTRIBUTION_OF_IMPORT.get(missing) or _DISTRIBUTION_OF_IMPORT.get(top) or top
        return LoadError(
            f"Reference {spec!r}: importing {what} failed because it imports {missing!r}, which is not "
            f"installed. Install it, e.g. `uv pip install {dist}` (or `pip install {dist}`).",
            name=missing,
        )
    if isinstance(exc, SyntaxError):
        return LoadError(
            f"Reference {spec!r}: importing {what} failed with a syntax error: {exc}. Fix that file."
        )
    return LoadError(
        f"Reference {spec!r}: importing {what} raised {type(exc).__name__}: {exc}. "
        "The error comes from the imported code itself; see the traceback above this one."
    )


def _get_attr(module: ModuleType, parsed: ObjectSpec, spec: str) -> Any:
    obj: Any = module
    walked = []
    for part in parsed.attr.split("."):
        if not hasattr(obj, part):
            owner = module.__name__ if not walked else ".".join(walked)
            where = parsed.target if not walked else f"{parsed.target}:{owner}"
            defined = sorted(n for n in dir(obj) if not n.startswith("_"))
            close = difflib.get_close_matches(part, defined, n=1, cutoff=0.6)
            suggestion = f" Did you mean `{close[0]}`?" if close else ""
            listing = ", ".join(defined[:40]) + (", ..." if len(defined) > 40 else "") or "(no public names)"
            raise LoadError(
                f"Reference {spec!r}: {where} has no attribute {part!r}.{suggestion} It defines: {listing}."
            )
        obj = getattr(obj, part)
        walked.append(part)
    return obj
