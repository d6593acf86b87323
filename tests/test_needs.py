"""The browser and PDF checks skip on a person's machine without their tools and fail under CI."""

import pytest

import _needs


def test_missing_tools_skip_locally(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="poppler"):
        _needs.require("pdftotext missing (poppler)")


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_missing_tools_fail_under_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        _needs.require("no Chromium")


def test_present_tools_neither_skip_nor_fail(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert _needs.require(None) is None
