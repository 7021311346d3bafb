"""docs/events.md embeds the stage graph; it must be the one `gmi-fsm graph` prints."""

from pathlib import Path

from states.machine import mermaid_diagram
from states.stages import STAGE_NAMES

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def test_docs_embed_the_current_graph() -> None:
    text = DOC.read_text()
    start = text.index("```mermaid\n") + len("```mermaid\n")
    end = text.index("```", start)
    assert text[start:end].strip() == mermaid_diagram().strip(), (
        "docs/events.md is stale: regenerate its mermaid block from `gmi-fsm graph`"
    )


def test_graph_names_every_stage_and_outcome() -> None:
    diagram = mermaid_diagram()
    for state in (*STAGE_NAMES, "requested", "paused", "failed", "aborted", "succeeded"):
        assert f'state "{state}"' in diagram
