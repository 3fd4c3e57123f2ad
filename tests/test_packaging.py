"""setup.cfg lists the packages by hand (two roots: src/emprl and reward_models); a package folder
missing from the list would install without its modules, so every one must be listed."""

import configparser
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _package_folders() -> set[str]:
    found = set()
    for root, prefix in (("src/emprl", "emprl"), ("reward_models", "reward_models")):
        for folder, _, files in os.walk(os.path.join(ROOT, root)):
            if "__init__.py" in files:
                rel = os.path.relpath(folder, os.path.join(ROOT, root))
                found.add(prefix if rel == "." else prefix + "." + rel.replace(os.sep, "."))
    return found


def test_every_package_folder_is_listed_in_setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    listed = set(parser["options"]["packages"].split())
    missing = _package_folders() - listed
    assert not missing, f"setup.cfg [options] packages lacks {sorted(missing)}"
    assert "emprl.ppo" in listed and "emprl.pipeline" in listed
