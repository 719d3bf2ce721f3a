"""Sphinx configuration of the documentation site (``./scripts/docs`` builds it).

The guide is the Markdown pages in this folder (MyST); the API reference, ``api/``, is generated
from the Google-style docstrings (autodoc and napoleon). The build is strict: ``scripts/docs``
and Read the Docs turn every warning into an error, and every cross-reference must resolve
(``nitpicky``). Nothing is fetched while building: no intersphinx, no CDN.

Names re-exported by a package (``cache_service_client.DeviceMetadata`` is
``cache_service_client.models.DeviceMetadata``) are documented once, on the page of the public
module that holds them; :func:`resolve_by_namespace` lets a cross-reference name an object by
any path that Python resolves to it, as the docstrings do.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

# The source tree first: a build from a checkout documents that checkout even if another
# version of the package is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import cache_service_client

PACKAGE = cache_service_client.__name__

project = "cache-service-client"
author = "cache-service-client contributors"
copyright = f"%Y, {author}"
release = version = cache_service_client.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]
# Warnings are errors (scripts/docs: -W; Read the Docs: fail_on_warning), and so is every
# cross-reference that does not resolve.
nitpicky = True
# Classes outside the project that signatures and docstrings name, each exactly: their inventories
# (intersphinx) would need the network, and the build fetches nothing, so they show unlinked.
nitpick_ignore = [
    ("py:class", name)
    for name in (
        # The standard library's (the Python documentation's inventory is not fetched).
        "argparse.ArgumentParser",
        "argparse.Namespace",
        "collections.abc.AsyncIterator",
        "collections.abc.Awaitable",
        "collections.abc.Callable",
        "collections.abc.Iterable",
        "collections.abc.Iterator",
        "collections.abc.Mapping",
        "collections.abc.Sequence",
        "contextlib.AbstractAsyncContextManager",
        "datetime.datetime",
        "os.PathLike",
        "ssl.SSLContext",
        "subprocess.Popen",
        # typing's, which cache_service_client.client imports on Python 3.10 for type checkers
        # only (typing_extensions), so a build on 3.10 sees the bare name.
        "Unpack",
        # opentelemetry-api's, which cache_service_client.telemetry imports for type checkers
        # only (the [otel] extra is optional), so signatures show the bare names.
        "MeterProvider",
        "TracerProvider",
        # The dependencies' (runtime and extras), as annotations and docstrings name them.
        "dependency_injector.containers.DeclarativeContainer",
        "dependency_injector.providers.Object",
        "fastapi.params.Depends",
        "httpx.AsyncClient",
        "httpx.Client",
        "litestar.config.app.AppConfig",
        "litestar.plugins.base.InitPluginProtocol",
        "msgspec.Struct",
        "msgspec.ValidationError",
        "redis.asyncio.client.Redis",
        "redis.asyncio.cluster.RedisCluster",
        "redis.client.Redis",
        "redis.cluster.RedisCluster",
        "starlette.applications.Starlette",
        "starlette.background.BackgroundTask",
        "starlette.requests.HTTPConnection",
        "starlette.responses.JSONResponse",
    )
]

# -- MyST: the Markdown pages ----------------------------------------------------------------

# The pages link to sections of one another (scaling.md#queries): ids for headings down to ###.
myst_heading_anchors = 3

# -- autodoc and napoleon: the API reference -------------------------------------------------

autodoc_default_options = {"show-inheritance": True}
autodoc_member_order = "bysource"
# Types stay in the signatures (the docstrings' Args sections carry none). A long signature shows
# one parameter a line; Sphinx measures it with its qualified names, so 150 is about a line.
autodoc_typehints = "signature"
python_maximum_signature_line_length = 150
autodoc_preserve_defaults = True
python_use_unqualified_type_names = True
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_attr_annotations = True

# -- HTML ------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"{project} {release}"
# The gateway's OpenAPI document, also at the site's root (/openapi.json), as the gateway
# serves it; http.md links to it.
html_extra_path = ["openapi.json"]

# -- Cross-references through Python's namespaces --------------------------------------------

_logger = logging.getLogger(__name__)
_MISSING = object()
# Per build environment: (last name, id of the object) -> the name it is documented under.
_DOCUMENTED: dict[int, dict[tuple[str, int], str]] = {}


def _lookup(path: str) -> Any:
    """The object that ``path`` names inside the package (importing it), or ``_MISSING``."""
    parts = path.split(".")
    if parts[0] != PACKAGE or "__main__" in parts:
        return _MISSING
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            return _MISSING
        return obj
    return _MISSING


def _documented(env: BuildEnvironment) -> dict[tuple[str, int], str]:
    """Map (last name, id of the object) to the documented full name, for every py object.

    Built once, when every page has been read (references resolve and the coverage check runs
    only then); the shortest documented name wins.
    """
    cache = _DOCUMENTED.get(id(env))
    if cache is None:
        cache = _DOCUMENTED[id(env)] = {}
        for name in sorted(env.domains["py"].objects, key=len):
            obj = _lookup(name)
            if obj is not _MISSING:
                cache.setdefault((name.rpartition(".")[2], id(obj)), name)
    return cache


def _documented_name(env: BuildEnvironment, path: str) -> str | None:
    """The name under which the object that ``path`` names is documented, if it is."""
    objects = env.domains["py"].objects
    if path in objects:
        return path
    obj = _lookup(path)
    if obj is _MISSING:
        return None
    found = _documented(env).get((path.rpartition(".")[2], id(obj)))
    if found is not None:
        return found
    # A member of a re-exported class: the class's documented name and the member's.
    parent, _, member = path.rpartition(".")
    if parent and inspect.isclass(_lookup(parent)):
        owner = _documented_name(env, parent)
        if owner is not None and f"{owner}.{member}" in objects:
            return f"{owner}.{member}"
    return None


def _defining_module(node: nodes.Node) -> str | None:
    """The module whose source holds the docstring that ``node`` comes from, if known.

    autodoc names each docstring's source ``FILE:docstring of NAME``, NAME being the object's
    full name in the module that defines it: the longest prefix of NAME that is a module.
    """
    source = node.get("source") if isinstance(node, nodes.Element) else None
    while not source and node.parent is not None:
        node = node.parent
        source = node.get("source") if isinstance(node, nodes.Element) else None
    _, marker, name = (source or "").partition("docstring of ")
    if not marker:
        return None
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        if ".".join(parts[:split]) in sys.modules:
            return ".".join(parts[:split])
    return None


def _candidates(node: pending_xref) -> Iterator[str]:
    """Full names a Python reference may mean, in the order Python would look them up.

    As written; in the class and module of the page's context (where Sphinx looks); in the
    module whose source holds the docstring (where Python looks: the context of a class
    documented through a package that re-exports it is the package, not that module).
    """
    target: str = node["reftarget"].lstrip(".~")
    cls = node.get("py:class")
    yield target
    for module in (node.get("py:module"), _defining_module(node)):
        if module and cls:
            yield f"{module}.{cls}.{target}"
        if module:
            yield f"{module}.{target}"


def resolve_by_namespace(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> nodes.reference | None:
    """Resolve a Python reference that names a documented object by another path.

    Sphinx finds an object only by the full name it is documented under. Python also finds it
    through any module that imports it: ``cache_service_client.DeviceMetadata`` and, inside
    ``cache_service_client.client``, plain ``DeviceMetadata`` are both
    ``cache_service_client.models.DeviceMetadata``. Only names inside the package are looked up
    (imported); anything else is left to the usual "reference target not found".
    """
    if node.get("refdomain") != "py":
        return None
    for candidate in _candidates(node):
        if isinstance(_lookup(candidate), TypeVar):
            # A type variable of a generic signature (``T``) is no object to link to.
            return contnode
        name = _documented_name(env, candidate)
        if name is not None:
            resolved: nodes.reference | None = env.domains["py"].resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
            )
            if resolved is not None:
                return resolved
    return None


# -- Every public name is documented ---------------------------------------------------------


def _public_modules() -> dict[str, ModuleType]:
    """The modules that have a page in api/: the package and each ``api/<module>.rst``."""
    pages = Path(__file__).resolve().parent / "api"
    names = sorted(page.stem for page in pages.glob(f"{PACKAGE}*.rst"))
    return {name: importlib.import_module(name) for name in names}


def check_public_names(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn about a name in a public module's ``__all__`` that is documented nowhere."""
    for module_name, module in _public_modules().items():
        for name in getattr(module, "__all__", ()):
            if _documented_name(env, f"{module_name}.{name}") is None:
                _logger.warning(
                    "%s.%s is public (in __all__) but not documented in api/",
                    module_name,
                    name,
                    type="csc",
                    subtype="undocumented",
                )


class ExportsDirective(SphinxDirective):
    """``.. exports:: package``: a table of the package's ``__all__``, by defining module.

    Each entry links to the name's documentation on its module's page, so the table never
    falls out of step with ``__all__``.
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        """Write one autosummary table per module that defines exported names."""
        package = importlib.import_module(self.arguments[0])
        by_module: dict[str, list[str]] = {}
        for name in package.__all__:
            if name.startswith("__"):
                continue  # __version__: documented on the package's page itself
            obj = getattr(package, name)
            home = getattr(obj, "__module__", None) if not isinstance(obj, ModuleType) else None
            if not isinstance(home, str) or not (inspect.isclass(obj) or inspect.isroutine(obj)):
                home = _listing_module(package, name)
            by_module.setdefault(_public_home(home), []).append(name)
        # autosummary wants names relative to the current module (the package's page).
        current = self.env.ref_context.get("py:module")
        lines: list[str] = []
        for module_name in sorted(by_module):
            relative = module_name
            if current and module_name.startswith(f"{current}."):
                relative = module_name.removeprefix(f"{current}.")
            elif module_name == current:
                relative = ""
            lines += [f".. rubric:: From :mod:`{module_name}`", "", ".. autosummary::", ""]
            lines += [
                f"   ~{relative}.{name}" if relative else f"   {name}"
                for name in sorted(by_module[module_name])
            ]
            lines.append("")
        content = StringList(lines, source=self.get_source_info()[0])
        container = nodes.container()
        self.state.nested_parse(content, self.content_offset, container)
        return list(container.children)


def _listing_module(package: ModuleType, name: str) -> str:
    """For a constant, the package's module that lists it in its own ``__all__``."""
    for module_name, module in sorted(sys.modules.items()):
        if (
            module_name.startswith(f"{package.__name__}.")
            and module is not None
            and name in getattr(module, "__all__", ())
        ):
            return module_name
    return package.__name__


def _public_home(module_name: str) -> str:
    """The public module whose page documents a module's names (a private one's public parent)."""
    public = _public_modules()
    parts = module_name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in public and candidate != PACKAGE:
            return candidate
        parts.pop()
    return module_name


# -- What autodoc shows ----------------------------------------------------------------------


def drop_type_docstrings(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Show no docstring for a constant that has none of its own, rather than its type's.

    A constant that autodoc finds no ``#:`` comment for (``cache_service_client.server`` names
    ``DEFAULT_MAX_BODY_BYTES`` lazily) would otherwise be described by ``int``'s docstring.
    """
    if what in ("attribute", "data") and lines:
        own = type(obj).__doc__
        if isinstance(own, str) and "\n".join(lines).split() == own.split():
            lines.clear()


def keep_attribute_summaries(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Undo napoleon's reading of an attribute's first line as ``type: description``.

    Google style lets the docstring of an attribute, a property or a module constant start with
    its type (``int: The count.``), and napoleon shows the text before the line's first colon as
    the type. Here types come from annotations, and a summary's colon is prose (``Default limit
    of a request body: room for ...``), so the line is put back as written. Runs after napoleon.
    """
    if what not in ("attribute", "property", "data") or len(lines) < 2:
        return
    if not lines[-1].startswith(":type: ") or lines[-2] or ":type: " in "".join(lines[:-1]):
        return
    summary = lines[-1].removeprefix(":type: ")
    del lines[-2:]
    if lines and lines[0]:
        lines[0] = f"{summary}: {lines[0]}"
    else:
        lines.insert(0, f"{summary}:")


def hide_private_bases(app: Sphinx, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    """Show a private base class as the public bases it stands for.

    Private: its name starts with ``_`` (``_Common``) or it lives in a private module (the
    models' ``cache_service_client._pydantic.PydanticSupport`` mixin).
    """
    public: list[Any] = []
    pending = list(bases)
    while pending:
        base = pending.pop(0)
        module = getattr(base, "__module__", "") or ""
        if getattr(base, "__name__", "").startswith("_") or any(
            part.startswith("_") for part in module.split(".")
        ):
            pending[:0] = [b for b in getattr(base, "__bases__", ()) if b is not object]
        elif base not in public:
            public.append(base)
    bases[:] = public or [object]


_ANNOTATED = re.compile(r"~?(?:\w+\.)*Annotated\[")


def _drop_annotated(text: str) -> str:
    """``Annotated[X, meta]`` as ``X``, anywhere in an annotation's text."""
    out: list[str] = []
    start = 0
    while match := _ANNOTATED.search(text, start):
        out.append(text[start : match.start()])
        depth, end, first = 1, match.end(), None
        while depth:
            char = text[end]
            if char in "[(":
                depth += 1
            elif char in "])":
                depth -= 1
            elif char == "," and depth == 1 and first is None:
                first = end
            end += 1
        out.append(_drop_annotated(text[match.end() : first if first is not None else end - 1]))
        start = end
    out.append(text[start:])
    return "".join(out)


def clean_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None]:
    """Make a model's signature one that Sphinx can parse and link.

    ``Annotated[datetime, msgspec.Meta(tz=True)]`` shows as ``datetime``: the models' fields
    carry msgspec constraints (``AwareDatetime``, lengths) that their docstrings describe, and
    Sphinx renders the metadata as an expression it cannot parse (on Python 3.11 with a wrong
    module, too: ``~datetime.Annotated``). A ``<factory>`` default shows as the factory's call.
    """
    if signature and "<factory>" in signature and inspect.isclass(obj):
        signature = _name_factories(obj, signature)
    return (
        _drop_annotated(signature) if signature else signature,
        _drop_annotated(return_annotation) if return_annotation else return_annotation,
    )


def _name_factories(cls: type, signature: str) -> str:
    """Replace each ``<factory>`` default of a model's signature by the factory's call.

    ``<factory>`` (msgspec's and dataclasses' placeholder) is no Python expression, so Sphinx
    could not parse the signature and would link its pieces; ``dict()`` says the same.
    """
    try:
        import msgspec

        fields = msgspec.structs.fields(cls)
    except (ImportError, TypeError):
        return signature
    for field in fields:
        factory = field.default_factory
        if factory is not msgspec.NODEFAULT:
            call = f"{factory.__name__}()" if factory.__module__ == "builtins" else "..."
            signature = signature.replace("<factory>", call, 1)
    return signature


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the hooks above, the coverage check and the ``exports`` directive."""
    app.connect("autodoc-process-docstring", drop_type_docstrings, priority=400)
    app.connect("autodoc-process-docstring", keep_attribute_summaries, priority=600)
    app.connect("autodoc-process-bases", hide_private_bases)
    app.connect("autodoc-process-signature", clean_signature)
    app.connect("missing-reference", resolve_by_namespace)
    app.connect("env-check-consistency", check_public_names)
    app.add_directive("exports", ExportsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
