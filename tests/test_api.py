"""The Python API: what ``dir(cirbench)`` shows, and the README's example run as written."""
import re
from pathlib import Path

import cirbench

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_api_is_listed_and_loaded_on_first_use():
    assert {"run", "load_runs", "tables", "score"} <= set(dir(cirbench))
    assert cirbench.run.__module__ == "cirbench.api" and "grid" in cirbench.run.__doc__


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"<!-- api-example -->\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    printed = capsys.readouterr().out.splitlines()
    assert len(scope["runs"]) == 2 and [r.noise["rate"] for r in scope["runs"]] == [0.0, 0.5]
    assert printed[0].startswith("clip4cir 0.0 0 ") and "shapes-cirr (cirr layout)" in printed[-1]
    assert scope["predictions"].is_file()
    # cirbench.score re-scores that saved ranking to the run's own best metrics
    from cirbench.data.datasets import shapes_root

    scored = cirbench.score("cirr", shapes_root("cirr"), scope["predictions"],
                            subset_predictions=scope["predictions"].with_name("val_recall_subset.json"))
    assert scored.metrics == scope["runs"][0].metrics["best"]
