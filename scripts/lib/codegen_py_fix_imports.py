"""Make grpcio-tools / mypy-protobuf output importable from inside the `etter_client` package.

protoc's Python generators write absolute imports that mirror the proto package
(`from etter.pipeline.v1 import resources_pb2`, `import etter.pipeline.v1.resources_pb2` in stubs)
and have no option for a package prefix or relative imports. scripts/codegen generates into
`etter_client/_gen/`, then this step rewrites every reference to a generated module of ours to
`etter_client._gen.<proto package>.<module>`:

- `.py`:  `from etter.x.y import m_pb2 ...`   -> `from etter_client._gen.etter.x.y import m_pb2 ...`
- `.py`:  `'etter.x.y.m_pb2'` (the module name passed to the descriptor builder, which becomes the
          messages' `__module__`, so pickling and repr name the real module)
- `.pyi`: `import etter.x.y.m_pb2` and every `etter.x.y.m_pb2.Name` annotation

Imports of `google.protobuf` and `google.rpc` are left alone: those modules come from the
`protobuf` and `googleapis-common-protos` distributions. The rewrite is a pure function of its input
(deterministic) and idempotent; afterwards no `etter.` import may remain, or this script fails.

Usage: python codegen_py_fix_imports.py GEN_ROOT [PROTO_TOP_PACKAGE ...]
  GEN_ROOT: the directory that becomes `etter_client/_gen` (its import path is `etter_client._gen`).
  PROTO_TOP_PACKAGE: top-level proto packages that were generated (default: etter).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PREFIX = "etter_client._gen"


def rewrite(text: str, tops: list[str]) -> str:
    alt = "|".join(re.escape(t) for t in tops)
    # `from etter.pipeline.v1 import x_pb2 as ...` (grpcio-tools .py output).
    text = re.sub(
        rf"^(\s*)from ((?:{alt})(?:\.\w+)*) import ",
        rf"\1from {PREFIX}.\2 import ",
        text,
        flags=re.MULTILINE,
    )
    # Dotted module references ending in a generated module name: `etter.pipeline.v1.x_pb2`
    # (stub imports and annotations, the builder's module name). Not after a word character or a
    # dot, so an already-prefixed name is never prefixed twice.
    text = re.sub(
        rf"(?<![\w.])((?:{alt})(?:\.\w+)*\.\w+_pb2(?:_grpc)?)\b",
        rf"{PREFIX}.\1",
        text,
    )
    return text


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[1])
    tops = argv[2:] or ["etter"]
    leftover = re.compile(
        rf"^\s*(?:from|import)\s+(?:{'|'.join(re.escape(t) for t in tops)})\b", re.MULTILINE
    )
    bad: list[str] = []
    files = sorted(p for p in root.rglob("*") if p.suffix in (".py", ".pyi") and p.is_file())
    for path in files:
        old = path.read_text(encoding="utf-8")
        new = rewrite(old, tops)
        if new != old:
            path.write_text(new, encoding="utf-8")
        if leftover.search(new):
            bad.append(str(path))
    if bad:
        print("codegen: unrewritten absolute imports remain in: " + ", ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
