"""Print the README's column tables from the one registry (mfdscope.frames).

tests/test_readme.py checks the README holds exactly this text.
"""
from mfdscope import frames


def tables() -> str:
    out = []
    for title, cols in (("packets", frames.PACKET_COLUMNS),
                        ("connections", frames.CONNECTION_COLUMNS),
                        ("timeline", frames.TIMELINE_COLUMNS),
                        ("main", frames.MAIN_COLUMNS),
                        ("expert", frames.EXPERT_COLUMNS)):
        out.append(f"#### `{title}`\n\n| column | dtype | filter name | meaning |\n|---|---|---|---|")
        for c in cols:
            out.append(f"| `{c.name}` | {c.dtype} | `{c.field}` | {c.doc.replace('|', chr(92) + '|')} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(tables(), end="")
