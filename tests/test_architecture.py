"""The codebase keeps its shape: one definition of the schema, one script path, readable
scripts, small modules, and an architecture page that names what exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fifoflow import keys, scripts
from fifoflow.keys import Field, Status

SRC = Path(__file__).parent.parent / "src" / "fifoflow"
LUA = SRC / "scripts"
DOC = Path(__file__).parent.parent / "docs" / "architecture.md"
MAX_LINES = 350


def test_lua_constants_come_from_the_python_enums() -> None:
    source = scripts.library().source
    code = "\n".join(line.partition("--")[0] for line in source.split("\n"))
    # Every S./F./K. name in code was replaced by its value; none is left for run time.
    assert not scripts.CONSTANT_RE.search(code)
    # A name the enums lack fails the build, with the name in the message.
    try:
        scripts.resolve("return F.no_such_field")
    except scripts.ScriptError as e:
        assert "NO_SUCH_FIELD" in str(e)
    else:
        raise AssertionError("an unknown constant was accepted")
    assert scripts.resolve("return {S.dead, F.claim_seq, K.ready} -- F.x in a comment") == (
        f"return {{'{Status.DEAD.value}', '{Field.CLAIM_SEQ.value}', '{keys.Key.READY.value}'}}"
        " -- F.x in a comment"
    )


def test_the_library_registers_every_script_under_its_version(url: str) -> None:
    import redis

    lib = scripts.library()
    client = redis.Redis.from_url(url, decode_responses=True)
    client.execute_command("FUNCTION", "LOAD", "REPLACE", lib.source)

    def as_dict(item: Any) -> dict[str, Any]:  # a flat [key, value, ...] list, or a map
        return item if isinstance(item, dict) else dict(zip(item[::2], item[1::2], strict=True))

    listed = client.function_list(library=lib.name)
    names = {as_dict(f)["name"] for entry in listed for f in as_dict(entry)["functions"]}
    assert names == set(lib.functions.values())
    assert all(f.startswith(f"ff_{lib.name.split('_')[1]}_") for f in names)
    client.close()


def test_scripts_name_statuses_and_fields_only_through_the_schema() -> None:
    names = {s.value for s in Status} | {f.value for f in Field}
    for path in LUA.glob("*.lua"):
        code = re.sub(r"--[^\n]*", "", path.read_text())  # comments may name them
        literals = set(re.findall(r"'([^'\n]*)'", code))
        assert not literals & names, f"{path.name} spells {literals & names} literally"


def test_every_script_has_a_header_naming_its_keys_and_args() -> None:
    for name in scripts.NAMES:
        text = (LUA / f"{name}.lua").read_text()
        assert text.startswith(f"-- {name}.lua: "), name
        header = text.split("\nlocal ", 1)[0]
        assert "KEYS[1]" in header and "Returns" in header, name
        if "ARGV" in text.split(header, 1)[1]:
            assert "ARGV" in header, name
        # One key per script: every key it touches derives from the queue's prefix.
        assert not re.search(r"KEYS\[[2-9]\]", text), name


def test_exactly_one_place_calls_a_script() -> None:
    calls = []
    for path in SRC.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            pattern = r"scripts\.run\(|\"FCALL\"|\"EVALSHA\"|evalsha\(|\.eval\(|script_load\("
            if re.search(pattern, line):
                calls.append(f"{path.relative_to(SRC)}:{n}")
    # scripts.command builds FCALL (its one line) for scripts.run and scripts.pipelined;
    # the broker's _script is run's one caller (pipelined's is a push's staging, which
    # goes on through _script after any trouble).
    assert len(calls) == 2, calls
    assert any(c.startswith("scripts.py:") for c in calls), calls
    assert any(c.startswith("broker.py:") for c in calls), calls
    users = [p.name for p in SRC.rglob("*.py") if "scripts.pipelined(" in p.read_text()]
    assert users == ["broker_push.py"], users


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    big = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_architecture_page_names_every_module_and_only_real_ones() -> None:
    # The map and the life of a job name what exists; "Rooms" names what is to come.
    text = DOC.read_text().split("## Rooms for what comes next", 1)[0]
    named = set(re.findall(r"`([a-z_/]+\.(?:py|lua))`", text))
    named |= set(re.findall(r"\b([a-z_]+/?[a-z_]+\.(?:py|lua))\b", text.split("```")[1]))
    named = {n for n in named if not n.startswith("tests/")}
    modules = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if p.name != "__main__.py"}
    modules = {m.replace("/__init__.py", "/") if m.endswith("/__init__.py") else m for m in modules}
    lua = {f"scripts/{p.name}" for p in LUA.glob("*.lua")} | {p.name for p in LUA.glob("*.lua")}
    unknown = {n for n in named if n not in modules and n not in lua and f"scripts/{n}" not in lua}
    assert not unknown, f"docs/architecture.md names files that do not exist: {sorted(unknown)}"
    missing = {m for m in modules if m.endswith(".py") and m not in named}
    assert not missing, f"docs/architecture.md does not mention: {sorted(missing)}"


def test_architecture_page_lists_every_key_of_a_queue() -> None:
    table = DOC.read_text().split("## Keys of queue", 1)[1].split("## ", 1)[0]
    for key in keys.Key:
        name = key.value.rstrip(":")
        assert f"`{name}" in table or f"/ `{name}`" in table, f"{key.value} is not documented"
