from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    missing = [
        f"ORCH_{name.upper()}"
        for name in Settings.model_fields
        if f"ORCH_{name.upper()}" not in text
    ]
    assert not missing, f"document these in README.md: {missing}"
