"""House rules that ruff and mypy cannot see (run by `make lint` and CI).

- The unit of work is the request: `.commit()` only in routers/unit_of_work.py (tests excepted).
- Tenant scoping has one home: comparisons with `principal.organization_id` or
  `principal.therapist_id` only in service/core/auth.py.
- Dependencies point one way: routers -> service -> models. models/ imports neither; service/
  imports routers/ only in the app factory; only service/app.py and service/metrics.py touch
  the web framework.
- Routers do not query: no `sqlalchemy` imports in routers/ beyond session types and errors.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMIT_ALLOWED = {"routers/unit_of_work.py"}
SCOPING_HOME = "service/core/auth.py"
WEB_FRAMEWORK_IN_SERVICE = {"service/app.py", "service/core/metrics.py"}
# DESIGN.md puts create_app in service/app.py: the composition root that mounts the routers.
COMPOSITION_ROOT = "service/app.py"
ROUTER_SQLALCHEMY_ALLOWED = ("sqlalchemy.ext.asyncio", "sqlalchemy.exc")


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def check_file(rel: str, tree: ast.AST) -> list[str]:
    problems = []
    top = rel.split("/", 1)[0]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "commit"
            and rel not in COMMIT_ALLOWED
        ):
            problems.append(f"{rel}:{node.lineno}: commit outside the unit of work")
        if isinstance(node, ast.Compare) and rel != SCOPING_HOME:
            for side in [node.left, *node.comparators]:
                if (
                    isinstance(side, ast.Attribute)
                    and side.attr in {"organization_id", "therapist_id"}
                    and isinstance(side.value, ast.Name)
                    and side.value.id == "principal"
                ):
                    problems.append(f"{rel}:{node.lineno}: tenant filter outside {SCOPING_HOME}")
    for lineno, module in imported_modules(tree):
        root = module.split(".")[0]
        if top == "models" and root in {"service", "routers"}:
            problems.append(f"{rel}:{lineno}: models/ imports {module}")
        if top == "service" and root == "routers" and rel != COMPOSITION_ROOT:
            problems.append(f"{rel}:{lineno}: service/ imports {module}")
        if (
            top == "service"
            and root in {"fastapi", "starlette"}
            and rel not in WEB_FRAMEWORK_IN_SERVICE
        ):
            problems.append(f"{rel}:{lineno}: service/ imports the web framework ({module})")
        if (
            top == "routers"
            and root == "sqlalchemy"
            and not module.startswith(ROUTER_SQLALCHEMY_ALLOWED)
        ):
            problems.append(f"{rel}:{lineno}: routers/ builds queries ({module}); use service/")
    return problems


def main() -> int:
    problems: list[str] = []
    for folder in ("service", "routers", "models"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            problems += check_file(rel, ast.parse(path.read_text(), filename=rel))
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
