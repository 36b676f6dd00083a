import pytest
import yaml

from pipeline.config import ConfigError, load_params


def test_set_overrides_params_yaml_with_typed_values(tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text("update:\n  lr: 0.01\n")
    params = load_params(params_file, ["update.max_iters=12", "update.new_share=0.25"])
    assert (params.update.lr, params.update.max_iters, params.update.new_share) == (0.01, 12, 0.25)


@pytest.mark.parametrize("override, culprit", [
    ("update.lr=fast", "update.lr"), ("sgm.init_max_old_drop=-1", "sgm.init_max_old_drop"),
    ("update.nonsense=1", "update.nonsense"), ("noequals", "noequals"),
    # a switch retired after measurement, set to the value it was retired against
    ("update.stop_patience=3", "update.stop_patience was removed .*update.stop_patience=None"),
    ("sgm.head_refit=true", "sgm.head_refit was removed .*sgm.head_refit=False"),
])
def test_bad_values_name_the_key(override, culprit):
    with pytest.raises(ConfigError, match=culprit):
        load_params(None, [override])


def test_an_older_params_file_still_loads(tmp_path):
    """A renamed key is read under its new name; a retired switch at the value every session now has is dropped."""
    old = tmp_path / "params.yaml"
    old.write_text("update:\n  epochs: 3\n  stop_patience: null\n  norm_stats: false\nsgm:\n  head_refit: false\n")
    assert load_params(old).update.new_data_passes == 3


def test_repo_params_yaml_is_valid_and_states_every_default_of_the_code():
    """One source of truth: params.yaml spells out every key with the code's default value (no drift)."""
    from pathlib import Path

    import yaml

    path = Path(__file__).parents[1] / "params.yaml"
    assert load_params(path) == load_params(None)
    assert load_params(path).digest() == load_params(None).digest()  # == takes 3 for 3.0; the hash does not
    assert yaml.safe_load(path.read_text()).keys() == load_params(None).model_dump().keys()
    for section, values in yaml.safe_load(path.read_text()).items():
        if isinstance(values, dict):
            assert values.keys() == load_params(None).model_dump()[section].keys(), section


def test_the_papers_preset_is_params_yaml_with_sgms_own_pieces_on():
    from pathlib import Path

    root = Path(__file__).parents[1]
    paper, default = (load_params(root / name).model_dump() for name in ("params-sgm-paper.yaml", "params.yaml"))
    changed = {(section, key): values[key] for section, values in paper.items() if isinstance(values, dict)
               for key in values if values[key] != default[section][key]}
    assert changed == {("update", "new_class_share"): 0.5, ("update", "new_data_passes"): 1.0,
                       ("sgm", "soft_targets"): True, ("sgm", "lora"): True, ("sgm", "ema_decay"): None}


def test_a_renamed_key_beside_its_new_name_is_refused_and_the_old_method_name_still_runs_the_retrain(tmp_path):
    """`--set update.epochs=4` on a params file that sets update.new_data_passes would be silently lost: refused,
    naming the key to set. `joint`, the retrain's older name, still means the retrain."""
    from pathlib import Path

    from pipeline.methods import method_name

    with pytest.raises(ConfigError, match="update.epochs is now update.new_data_passes: set update.new_data_passes"):
        load_params(Path(__file__).parents[1] / "params.yaml", ["update.epochs=4"])
    assert load_params(None, ["sgm.refit_penalty=1e-2"]).sgm == load_params(None).sgm  # YAML's 1e-2 is a string
    assert method_name("joint") == "retrain" and method_name("sgm") == "sgm"
    with pytest.raises(ValueError, match="unknown method 'jointly'"):
        method_name("jointly")


def test_a_preset_holds_only_the_keys_it_changes_and_is_read_on_top_of_params_yaml(tmp_path):
    from pathlib import Path

    root = Path(__file__).parents[1]
    default = load_params(root / "params.yaml").model_dump()
    for name in ("params-gpu.yaml", "params-sgm-paper.yaml"):
        own = yaml.safe_load((root / name).read_text())
        assert own.pop("extends") == "params.yaml"
        for section, values in own.items():  # every key it names differs from params.yaml's
            assert all(default[section][key] != value for key, value in values.items()), (name, section)
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="`extends` makes a cycle"):
        load_params(tmp_path / "a.yaml")


def test_an_older_params_file_is_refused_by_key_never_read_with_another_meaning(tmp_path):
    """Before 12-05 `update.new_share` also set the new classes' share of each batch: a file that sets it without
    `update.new_class_share` is refused, naming the key to add; a retired switch at another value is refused too."""
    old = tmp_path / "params.yaml"
    old.write_text("update:\n  new_share: 0.25\n  min_iters: 30\n")  # 12-04's params.yaml, in short
    with pytest.raises(ConfigError, match=r"update.new_share=0.25 without update.new_class_share.*Add "
                                          r"update.new_class_share \(default 0.15; 0.25 keeps"):
        load_params(old)
    old.write_text("update:\n  new_share: 0.25\n  new_class_share: 0.25\n")  # said outright: loads
    assert load_params(old).update.new_class_share == 0.25
    old.write_text("update:\n  new_share: null\n  growth_share: 0.5\n")  # the file of 11-28
    with pytest.raises(ConfigError, match="update.growth_share is now update.new_share"):
        load_params(old)
    for key, value in (("update.growth_lr_scale", 0.33), ("sgm.logit_adjust", True)):
        section, leaf = key.split(".")
        old.write_text(f"{section}:\n  {leaf}: {value}\n")
        with pytest.raises(ConfigError, match=f"{key} was removed after measurement"):
            load_params(old)
    assert load_params(None, ["update.new_share=0.3"]).update.new_class_share == 0.15  # --set means today's key
