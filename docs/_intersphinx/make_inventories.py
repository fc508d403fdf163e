"""Write small offline intersphinx inventories (``*.inv``) for the names our docstrings reference.

The docs build runs without internet access, so ``conf.py`` reads these local inventories first and only falls
back to the projects' own online ``objects.inv``. Re-run this script after adding cross-references to new
external names: ``python docs/_intersphinx/make_inventories.py``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).parent

# (name, domain:role, relative uri) per project; "$" in the uri means "the name itself". Sphinx expands only a
# final "$" when it reads an inventory, so write_inventory expands the others ("generated/$.html#$").
ENTRIES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "python": (
        "Python",
        [
            ("int", "py:class", "library/functions.html#int"),
            ("float", "py:class", "library/functions.html#float"),
            ("bool", "py:class", "library/functions.html#bool"),
            ("str", "py:class", "library/stdtypes.html#str"),
            ("tuple", "py:class", "library/stdtypes.html#tuple"),
            ("list", "py:class", "library/stdtypes.html#list"),
            ("dict", "py:class", "library/stdtypes.html#dict"),
            ("range", "py:class", "library/stdtypes.html#range"),
            ("slice", "py:class", "library/functions.html#slice"),
            ("object", "py:class", "library/functions.html#object"),
            ("ValueError", "py:exception", "library/exceptions.html#$"),
            ("TypeError", "py:exception", "library/exceptions.html#$"),
            ("RuntimeError", "py:exception", "library/exceptions.html#$"),
            ("FileNotFoundError", "py:exception", "library/exceptions.html#$"),
            ("operator.index", "py:function", "library/operator.html#$"),
            ("sys.platform", "py:data", "library/sys.html#$"),
            ("tempfile.gettempdir", "py:function", "library/tempfile.html#$"),
            ("multiprocessing", "py:module", "library/multiprocessing.html#module-$"),
            ("argparse.ArgumentParser", "py:class", "library/argparse.html#$"),
            ("argparse.Namespace", "py:class", "library/argparse.html#$"),
            ("collections.abc.Sequence", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Callable", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Iterable", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Mapping", "py:class", "library/collections.abc.html#$"),
            ("typing.Any", "py:data", "library/typing.html#$"),
            ("typing.Optional", "py:data", "library/typing.html#$"),
            ("typing.Union", "py:data", "library/typing.html#$"),
            ("typing.Literal", "py:data", "library/typing.html#$"),
            ("typing.NamedTuple", "py:class", "library/typing.html#$"),
            ("typing.SupportsIndex", "py:class", "library/typing.html#$"),
            ("typing.SupportsFloat", "py:class", "library/typing.html#$"),
            ("pathlib.Path", "py:class", "library/pathlib.html#$"),
            ("os.PathLike", "py:class", "library/os.html#$"),
        ],
    ),
    "torch": (
        "PyTorch",
        [
            ("torch.Tensor", "py:class", "tensors.html#$"),
            ("torch.dtype", "py:class", "tensor_attributes.html#$"),
            ("torch.device", "py:class", "tensor_attributes.html#$"),
            ("torch.layout", "py:class", "tensor_attributes.html#$"),
            ("torch.Generator", "py:class", "generated/$.html#$"),
            ("torch.Size", "py:class", "size.html#$"),
            ("torch.nn.Module", "py:class", "generated/$.html#$"),
            ("torch.nn.Linear", "py:class", "generated/$.html#$"),
            ("torch.nn.Conv2d", "py:class", "generated/$.html#$"),
            ("torch.nn.Sequential", "py:class", "generated/$.html#$"),
            ("torch.nn.ReLU", "py:class", "generated/$.html#$"),
            ("torch.nn.LeakyReLU", "py:class", "generated/$.html#$"),
            ("torch.nn.MaxPool2d", "py:class", "generated/$.html#$"),
            ("torch.nn.MaxUnpool2d", "py:class", "generated/$.html#$"),
            ("torch.nn.ModuleList", "py:class", "generated/$.html#$"),
            ("torch.nn.Parameter", "py:class", "generated/torch.nn.parameter.Parameter.html#$"),
            ("torch.autograd.Function", "py:class", "autograd.html#$"),
            ("torch.sparse.mm", "py:function", "generated/$.html#$"),
            ("torch.compile", "py:function", "generated/$.html#$"),
            ("torch.export.export", "py:function", "user_guide/torch_compiler/export/api_reference.html#$"),
            ("torch.use_deterministic_algorithms", "py:function", "generated/$.html#$"),
            (
                "torch.autograd.gradcheck",
                "py:function",
                "generated/torch.autograd.gradcheck.gradcheck.html#$",
            ),
            ("torch.utils.data.Dataset", "py:class", "data.html#$"),
            ("torch.utils.data.DataLoader", "py:class", "data.html#$"),
            ("torch.utils.data.Sampler", "py:class", "data.html#$"),
            ("torch.optim.Optimizer", "py:class", "optim.html#$"),
        ],
    ),
    "numpy": (
        "NumPy",
        [
            ("numpy.ndarray", "py:class", "reference/generated/$.html#$"),
            ("numpy.random.Generator", "py:class", "reference/random/generator.html#$"),
            ("numpy.dtype", "py:class", "reference/generated/$.html#$"),
            ("numpy.integer", "py:class", "reference/arrays.scalars.html#$"),
        ],
    ),
    "torchvision": (
        "Torchvision",
        [
            ("torchvision.transforms.v2.Compose", "py:class", "generated/$.html#$"),
        ],
    ),
    "pillow": (
        "Pillow (PIL Fork)",
        [
            ("PIL.Image.Image", "py:class", "reference/Image.html#$"),
        ],
    ),
}


def expand_uri(name: str, uri: str) -> str:
    """``uri`` with each ``$`` but a final one replaced by ``name`` (Sphinx expands only the final one).

    Example:
        >>> expand_uri("torch.nn.Module", "generated/$.html#$")
        'generated/torch.nn.Module.html#$'
    """
    head, final = (uri[:-1], "$") if uri.endswith("$") else (uri, "")
    return head.replace("$", name) + final


def write_inventory(key: str, project: str, entries: list[tuple[str, str, str]]) -> Path:
    """Write ``<key>.inv`` in Sphinx inventory format version 2."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        "# Version: offline\n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    body = "".join(f"{name} {role} 1 {expand_uri(name, uri)} -\n" for name, role, uri in entries).encode()
    path = HERE / f"{key}.inv"
    path.write_bytes(header + zlib.compress(body))
    return path


if __name__ == "__main__":
    for key, (project, entries) in ENTRIES.items():
        print(write_inventory(key, project, entries))
