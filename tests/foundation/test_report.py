import base64
import subprocess
import sys

import pytest

from gpuslo.foundation.report import Page, Table, format_cell, subplots

HOSTILE = "<script>alert('x')</script> & \"quoted\""


def _figure():
    fig, ax = subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 0, 1])
    return fig


def test_every_text_and_cell_is_escaped():
    page = Page(HOSTILE, subtitle=HOSTILE, notes=[HOSTILE])
    section = page.section(HOSTILE)
    section.paragraph(HOSTILE)
    section.table([[HOSTILE, 1]], columns=[HOSTILE, "n"])
    section.table([{"name": HOSTILE}], columns=["name"], row_headers=True)
    text = page.render()
    assert "<script>" not in text and "alert('x')" not in text and '"quoted"' not in text
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;"
    # title, top heading, subtitle, note, section heading, paragraph, header, cell, row header
    assert text.count(escaped) == 9


def test_table_rows_and_numbers():
    table = Table(
        [["a", 1234, 0.5, 1234.56789], {"name": "b", "count": None, "share": float("nan")}],
        columns=["name", "count", "share", "dollars"],
        formats={"share": ".0%"},
    )
    text = table.html()
    assert text.count("<tr>") == 3
    assert "<tr><th>name</th><th>count</th><th>share</th><th>dollars</th></tr>" in text
    assert (
        "<tr><td>a</td><td class='num'>1,234</td><td class='num'>50%</td>"
        "<td class='num'>1,234.5679</td></tr>"
    ) in text
    # a missing mapping key, None and NaN are all "-"
    assert "<tr><td>b</td><td>-</td><td class='num'>-</td><td>-</td></tr>" in text


def test_format_cell():
    assert format_cell(None) == "-"
    assert format_cell(float("nan"), ".1%") == "-"
    assert format_cell(3) == "3" and format_cell(12345) == "12,345"
    assert format_cell(2.0) == "2.0000" and format_cell(0.123, ".1%") == "12.3%"
    assert format_cell(True) == "True" and format_cell("x") == "x"


def test_table_rejects_formats_for_unknown_columns_and_unnamed_mappings():
    with pytest.raises(ValueError, match="no such column"):
        Table([[1]], columns=["a"], formats={"b": ".1f"})
    with pytest.raises(ValueError, match="column names"):
        Table([{"a": 1}])


def test_chart_is_embedded_as_base64_png_and_the_figure_closed():
    import matplotlib.pyplot as plt

    page = Page("charts")
    fig = _figure()
    page.chart(fig, "a <chart>")
    assert not plt.fignum_exists(fig.number)
    text = page.render()
    assert "<img src='data:image/png;base64," in text and "alt='a &lt;chart&gt;'" in text
    encoded = text.split("base64,", 1)[1].split("'", 1)[0]
    assert base64.b64decode(encoded).startswith(b"\x89PNG\r\n\x1a\n")


def test_page_written_with_linked_charts_beside_it(tmp_path):
    page = Page("report", subtitle="a window")
    page.section("numbers").table([["x", 1.5]], columns=["name", "value"])
    page.section("chart").chart(_figure(), "a chart", file="chart.png", dpi=50)
    path = page.write(tmp_path / "out" / "report.html")
    assert path == tmp_path / "out" / "report.html"
    text = path.read_text()
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert "<title>report</title>" in text and "<h1>report</h1>" in text
    assert "<h2>numbers</h2>" in text and "<h2>chart</h2>" in text
    assert "<td class='num'>1.5000</td>" in text
    assert "<img src='chart.png' alt='a chart'>" in text
    assert (tmp_path / "out" / "chart.png").read_bytes().startswith(b"\x89PNG")
    assert text.count("<style>") == 1


def test_chart_files_are_plain_unique_names(tmp_path):
    page = Page("report")
    with pytest.raises(ValueError, match="plain file name"):
        page.chart(_figure(), "x", file="../escape.png")
    page.chart(_figure(), "one", file="same.png")
    page.chart(_figure(), "two", file="same.png")
    with pytest.raises(ValueError, match="same file name"):
        page.write(tmp_path / "report.html")


def test_importing_the_kit_leaves_matplotlib_unloaded():
    code = "import sys, gpuslo.foundation.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
