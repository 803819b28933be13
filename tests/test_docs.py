"""The custom-node guide shows the example plugin as it is: its code blocks are the plugin's files."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_guide_embeds_the_example_plugin_verbatim() -> None:
    guide = (ROOT / "docs" / "writing-a-custom-node.md").read_text()
    for path, language in (("examples/certificate-expiry/pyproject.toml", "toml"),
                           ("examples/certificate-expiry/evflow_certificate_expiry/__init__.py", "python")):
        block = f"`{path}`:\n\n```{language}\n{(ROOT / path).read_text().rstrip()}\n```"
        assert block in guide, f"{path} changed: rebuild docs/writing-a-custom-node.md from it"
