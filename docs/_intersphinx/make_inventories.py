"""Write small offline intersphinx inventories (``*.inv``) for the names our docstrings reference.

The docs build runs without internet access, so ``conf.py`` reads these local inventories first and only falls
back to the projects' own online ``objects.inv``. Re-run this script after adding cross-references to new
external names: ``python docs/_intersphinx/make_inventories.py``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).parent

# (name, domain:role, relative uri) per project; "$" in the uri means "the name itself" (Sphinx convention).
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
            ("ValueError", "py:exception", "library/exceptions.html#$"),
            ("TypeError", "py:exception", "library/exceptions.html#$"),
            ("RuntimeError", "py:exception", "library/exceptions.html#$"),
            ("FileNotFoundError", "py:exception", "library/exceptions.html#$"),
            ("collections.abc.Sequence", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Callable", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Iterable", "py:class", "library/collections.abc.html#$"),
            ("typing.Optional", "py:data", "library/typing.html#$"),
            ("typing.Union", "py:data", "library/typing.html#$"),
            ("typing.Literal", "py:data", "library/typing.html#$"),
            ("typing.NamedTuple", "py:class", "library/typing.html#$"),
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
            ("torch.use_deterministic_algorithms", "py:function", "generated/$.html#$"),
            (
                "torch.autograd.gradcheck",
                "py:function",
                "generated/torch.autograd.gradcheck.gradcheck.html#$",
            ),
            ("torch.utils.data.Dataset", "py:class", "data.html#$"),
            ("torch.utils.data.DataLoader", "py:class", "data.html#$"),
            ("torch.optim.Optimizer", "py:class", "optim.html#$"),
        ],
    ),
    "numpy": (
        "NumPy",
        [
            ("numpy.ndarray", "py:class", "reference/generated/$.html#$"),
            ("numpy.random.Generator", "py:class", "reference/random/generator.html#$"),
        ],
    ),
}


def write_inventory(key: str, project: str, entries: list[tuple[str, str, str]]) -> Path:
    """Write ``<key>.inv`` in Sphinx inventory format version 2."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        "# Version: offline\n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    body = "".join(f"{name} {role} 1 {uri} -\n" for name, role, uri in entries).encode()
    path = HERE / f"{key}.inv"
    path.write_bytes(header + zlib.compress(body))
    return path


if __name__ == "__main__":
    for key, (project, entries) in ENTRIES.items():
        print(write_inventory(key, project, entries))
