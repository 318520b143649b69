"""House rules that ruff and mypy cannot see (run by `make lint` and CI).

- The unit of work is the request: `.commit()` only in routers/unit_of_work.py (tests excepted).
- Tenant scoping has one home: comparisons with `principal.organization_id` or
  `principal.therapist_id` only in service/core/auth.py.
- Dependencies point one way: routers -> service -> models. models/ imports neither; service/
  imports routers/ only in the app factory; only service/app.py and service/core/metrics.py
  touch the web framework. Routers do not query: no `sqlalchemy` imports in routers/ beyond
  session types and errors.
- Inside service/, layers: service/core imports no domain; each domain imports only domains
  below it (DOMAIN_ORDER), so there is no cycle and nothing runs back up; the top-level
  modules (app, cli, bootstrap) sit above every domain.
- Inside service/programs, a change reads top-down: the use cases (orchestrators) may import
  the modules below them, never each other, and nothing below imports a use case.
- service/scheduling holds pure rules: no database, no sessions.
- Settings come from the app: no `Settings()` below the app factory and the CLI.
- Routes and dependencies in routers/ are `async def`: FastAPI runs a plain `def` in a worker
  thread, a hand-off there and back on every request.
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
SETTINGS_READERS = {"service/app.py", "service/cli.py"}
ROUTER_SQLALCHEMY_ALLOWED = ("sqlalchemy.ext.asyncio", "sqlalchemy.exc")
# Bottom to top: a domain imports only domains listed before it.
DOMAIN_ORDER = (
    "core",
    "scheduling",
    "catalog",
    "programs",
    "billing",
    "integrations",
    "reports",
    "jobs",
)
TOP = len(DOMAIN_ORDER)  # service/app.py, cli.py, bootstrap.py
# service/programs, bottom to top; the last rank holds the use cases, which never import each
# other.
PROGRAMS_LAYERS = {
    "records": 0,
    "session_records": 0,
    "rules": 0,
    "staffing_facts": 0,
    "staffing_check": 1,
    "materialize": 1,
    "series": 2,
    "booking": 3,
    "staffing": 3,
    "changes": 3,
    "sessions": 3,
    "therapist_view": 3,
    "calendar_feeds": 3,
    "observations": 3,
}
USE_CASES = max(PROGRAMS_LAYERS.values())
PURE = "scheduling"
IMPURE_ROOTS = {"sqlalchemy", "sqlmodel", "psycopg"}


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def domain_of(dotted: str) -> str | None:
    """`service.programs.records` -> "programs"; top-level service modules -> None."""
    parts = dotted.split(".")
    if len(parts) >= 3 and parts[1] in DOMAIN_ORDER:
        return parts[1]
    return None


def rank(domain: str | None) -> int:
    return TOP if domain is None else DOMAIN_ORDER.index(domain)


def service_problems(rel: str, lineno: int, module: str) -> list[str]:
    """Layering inside service/ for one import of `module` by the file `rel`."""
    if not module.startswith("service."):
        return []
    here = domain_of(rel.removesuffix(".py").replace("/", "."))
    there = domain_of(module)
    if there is None:
        if here is not None:
            return [f"{rel}:{lineno}: {module} sits above every domain; {here} may not import it"]
        return []
    problems = []
    if here is not None and there != here and rank(there) > rank(here):
        problems.append(f"{rel}:{lineno}: {here} imports {module}, a domain above it")
    if here == "programs" and there == "programs":
        mine = PROGRAMS_LAYERS.get(Path(rel).stem)
        theirs = PROGRAMS_LAYERS.get(module.split(".")[2])
        if mine is not None and theirs is not None and theirs >= mine and theirs > 0:
            problems.append(f"{rel}:{lineno}: {module} is not below this module")
        if mine is not None and theirs is not None and mine == theirs == USE_CASES:
            problems.append(f"{rel}:{lineno}: a use case imports another use case ({module})")
    return problems


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
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"Settings", "get_settings"}
            and top == "service"
            and rel not in SETTINGS_READERS
        ):
            problems.append(f"{rel}:{node.lineno}: settings read below the app; take them as input")
        if isinstance(node, ast.Compare) and rel != SCOPING_HOME:
            for side in [node.left, *node.comparators]:
                if (
                    isinstance(side, ast.Attribute)
                    and side.attr in {"organization_id", "therapist_id"}
                    and isinstance(side.value, ast.Name)
                    and side.value.id == "principal"
                ):
                    problems.append(f"{rel}:{node.lineno}: tenant filter outside {SCOPING_HOME}")
    if top == "routers":
        problems += thread_hopping(rel, tree)
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
        if rel.startswith(f"service/{PURE}/") and (
            root in IMPURE_ROOTS or module.startswith("service.core.db")
        ):
            problems.append(f"{rel}:{lineno}: {PURE}/ holds pure rules; no database ({module})")
        if top == "service":
            problems += service_problems(rel, lineno, module)
    return problems


def thread_hopping(rel: str, tree: ast.AST) -> list[str]:
    """Plain `def` routes (decorated `@router.<method>`) and dependencies (named in
    `Depends(...)` in the same file)."""
    depended = {
        node.args[0].id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "Depends"
        and node.args
        and isinstance(node.args[0], ast.Name)
    }
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        route = any(
            isinstance(d, ast.Call)
            and isinstance(d.func, ast.Attribute)
            and d.func.attr in {"get", "post", "put", "patch", "delete", "api_route"}
            for d in node.decorator_list
        )
        if route or node.name in depended:
            problems.append(f"{rel}:{node.lineno}: {node.name} is a plain def; make it async")
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
