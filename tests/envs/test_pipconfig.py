"""The machine's pip configuration becomes uv options."""

import configparser
from pathlib import Path

from workbench.envs import pipconfig


def test_files_and_variables_merge_like_pip(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg" / "pip"
    xdg.mkdir(parents=True)
    (xdg / "pip.conf").write_text(
        "[global]\nconstraint = /etc/c.txt\nindex-url = https://a/simple\n"
    )
    user = tmp_path / "home" / ".config" / "pip"
    user.mkdir(parents=True)
    (user / "pip.conf").write_text(
        "[global]\nextra-index-url = file:///one/simple file:///two/simple\n"
        "[install]\nfind-links = /from/file\n"
    )
    environ = {
        "XDG_CONFIG_DIRS": str(tmp_path / "xdg"),
        "HOME": str(tmp_path / "home"),
        "PIP_FIND_LINKS": "/opt/wheels",
    }
    config = pipconfig.read(environ)
    assert config.index_url == "https://a/simple"
    assert config.extra_index_urls == ("file:///one/simple", "file:///two/simple")
    assert config.find_links == ("/opt/wheels",)  # the variable wins over the file
    assert config.constraints == ("/etc/c.txt",)
    args = config.uv_args()
    assert args[-2:] == ["--index-strategy", "unsafe-best-match"]
    assert args[args.index("--find-links") :][:2] == ["--find-links", "/opt/wheels"]


def test_devnull_config_file_disables_files(tmp_path: Path) -> None:
    config = pipconfig.read({"PIP_CONFIG_FILE": "/dev/null", "HOME": str(tmp_path)})
    assert config == pipconfig.PipConfig()
    assert config.uv_args() == []


def test_merged_text_is_one_pip_conf_files_then_environment(tmp_path: Path) -> None:
    (tmp_path / "xdg" / "pip").mkdir(parents=True)
    (tmp_path / "xdg" / "pip" / "pip.conf").write_text(
        "[global]\nconstraint = /c.txt\nfind-links = /old\n[install]\nfind-links = /older\n"
    )
    (tmp_path / "home" / ".config" / "pip").mkdir(parents=True)
    (tmp_path / "home" / ".config" / "pip" / "pip.conf").write_text(
        "[global]\nconstraint = /user-c.txt\n"
    )
    environ = {
        "XDG_CONFIG_DIRS": str(tmp_path / "xdg"),
        "HOME": str(tmp_path / "home"),
        "PIP_FIND_LINKS": "/wheels",
    }
    merged = configparser.RawConfigParser()
    merged.read_string(pipconfig.merged_text(environ))
    assert merged.get("global", "constraint") == "/user-c.txt"  # the user's file wins
    assert merged.get("global", "find-links") == "/wheels"  # the environment wins over all
    assert not merged.has_option("install", "find-links")
