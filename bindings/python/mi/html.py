"""The self-contained HTML report (the page `mi report --html` writes).

    import mi, mi.html
    model = mi.Model.load("examples/models/induction-2l/model.safetensors")
    page = mi.html.report(model, prompt="<bos> ka mo zu ka mo zu", path="report.html")

In a Jupyter notebook the returned object displays the page inline (in an
iframe, so the page's script and style stay its own). The page is built by
the library itself (mi_model_html_report), from the same template files as
the command, so the two never differ.
"""

import html as _html
from typing import Optional, Sequence, Union


class Report:
    """An HTML report: ``.html`` is the page; Jupyter shows it inline."""

    def __init__(self, page: str, path: Optional[str] = None):
        self.html = page
        self.path = path

    def _repr_html_(self):
        return (f'<iframe srcdoc="{_html.escape(self.html, quote=True)}" '
                'style="width:100%;height:900px;border:1px solid #ddd"></iframe>')

    def __str__(self):
        return self.html

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.html)
        self.path = path


def report(model, prompt: Union[None, str, Sequence[int]] = None, path: Optional[str] = None,
           trigrams: int = 24, max_order: int = 2, title: Optional[str] = None,
           prepend_bos: bool = False, **thresholds) -> Report:
    """The page for ``model``: head table, roles, eigenvalues, composition,
    skip-trigrams, and for ``prompt`` (text, tokenized by the model's
    tokenizer, or token ids) every head's attention pattern and the logit
    attribution. Written to ``path`` when given. ``thresholds``: the role
    rule's (see Model.head_roles)."""
    tokens = model.tokens(prompt, prepend_bos) if prompt is not None else None
    page = Report(model.html_report(tokens, trigrams=trigrams, max_order=max_order,
                                    title=title, **thresholds))
    if path is not None:
        page.save(path)
    return page
