"""Lab names and namespace prefixes become namespace names and paths: matched whole."""

from __future__ import annotations

import pytest

from solverfleet_dev.lab.config import LabConfig, LabError


@pytest.mark.parametrize("name", ["", "demo\n", "Demo", "-demo", "a" * 25, "demo/x"])
def test_bad_lab_names_are_refused(name):
    with pytest.raises(LabError, match="bad lab name"):
        LabConfig.for_name(name)


@pytest.mark.parametrize("prefix", ["", "sf-\n", "sf /x", "a" * 33])
def test_bad_prefixes_are_refused(prefix):
    with pytest.raises(LabError, match="bad namespace prefix"):
        LabConfig.for_name("demo", prefix=prefix)


def test_a_good_name_gets_its_own_prefix():
    config = LabConfig.for_name("demo")
    assert config.name == "demo" and config.controller_netns.startswith(config.prefix)
