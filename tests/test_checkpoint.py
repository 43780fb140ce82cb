"""Checkpoints (dirbench.checkpoint): safe loading (weights_only) and exact RNG-state round trips."""

from __future__ import annotations

import pathlib
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from dirbench.checkpoint import FORMAT, encode_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from dirbench.cli import main
from dirbench.errors import UserError


class _TouchOnLoad:
    """Pickles into a call of ``pathlib.Path.touch(target)``: unpickling it creates ``target``."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return pathlib.Path.touch, (pathlib.Path(self.target),)


def _draws() -> tuple[list[float], list[float], list[float], list[float]]:
    """Numbers from every global generator, including numpy's cached Gaussian and Python's gauss_next."""
    return (
        torch.rand(5).tolist(),
        [*np.random.rand(3).tolist(), float(np.random.standard_normal())],
        [random.random(), random.gauss(0.0, 1.0)],
        torch.randn(3).tolist(),
    )


def test_rng_state_round_trip_through_a_safe_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    np.random.standard_normal()  # numpy now holds a cached Gaussian (has_gauss = 1)
    random.gauss(0.0, 1.0)  # Python now holds gauss_next
    save_checkpoint(tmp_path / "c.pt", {"rng": encode_rng_state()})
    expected = _draws()
    _draws()  # move every generator on
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert _draws() == expected


def test_encoded_rng_state_is_exact_and_plain() -> None:
    np.random.seed(9)
    np.random.standard_normal()
    random.seed(10)
    random.gauss(0.0, 1.0)
    encoded = encode_rng_state()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert encoded["numpy"]["bit_generator"] == name == "MT19937"
    assert np.array_equal(encoded["numpy"]["keys"].numpy(), keys.astype(np.int64))
    assert (encoded["numpy"]["pos"], encoded["numpy"]["has_gauss"], encoded["numpy"]["cached_gaussian"]) == (
        pos, has_gauss, cached,
    )  # fmt: skip
    version, internal, gauss_next = random.getstate()
    assert encoded["python"] == {"version": version, "internal": list(internal), "gauss_next": gauss_next}
    assert torch.equal(encoded["torch"], torch.get_rng_state())
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    restore_rng_state(encoded)
    after = np.random.get_state(legacy=True)
    assert after[0] == name and np.array_equal(after[1], keys) and after[2:] == (pos, has_gauss, cached)
    assert random.getstate() == (version, internal, gauss_next)


def test_code_in_a_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "model": {"w": torch.zeros(2)}, "extra": _TouchOnLoad(target)}, evil)
    # the fixture is real: an unsafe load runs the code
    torch.load(evil, weights_only=False)
    assert target.exists()
    target.unlink()
    with pytest.raises(UserError, match=r"evil\.pt: refused: .*pathlib.*could run code"):
        load_checkpoint(evil)
    assert not target.exists()


def test_cli_refuses_a_code_running_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "pwned"
    evil = tmp_path / "best.pt"
    torch.save({"format": FORMAT, "method": "voxelmorph", "x": _TouchOnLoad(target)}, evil)
    out = tmp_path / "d.nii.gz"
    argv = ["register", "--checkpoint", str(evil), "--device", "cpu", "--fixed", "f.nii.gz", "--moving",
            "m.nii.gz", "--out", str(out)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dirbench: error: {evil}: refused") and err.count("\n") == 1
    assert not target.exists() and not out.exists()


def test_numpy_arrays_are_refused(tmp_path: Path) -> None:
    """What the trainer stored before encode_rng_state: np.random.get_state() holds an ndarray."""
    path = tmp_path / "old.pt"
    torch.save({"format": FORMAT, "rng": {"numpy": np.random.get_state()}}, path)
    with pytest.raises(UserError, match=r"refused: .*numpy"):
        load_checkpoint(path)


def test_safe_checkpoint_with_optimizer_and_scheduler_loads(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=4, T_mult=2, eta_min=1e-5)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "position": {"epoch": 1, "history": [{"loss": 0.5, "val": None}]}, "rng": encode_rng_state()}  # fmt: skip
    save_checkpoint(tmp_path / "last.pt", state)
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded["scheduler"] == sched.state_dict()
    assert loaded["position"] == state["position"]
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=1e-3, amsgrad=True)
    opt2.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_corrupt_and_foreign_files(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"x": torch.ones(1000)})
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match=r"cut\.pt: "):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save([1, 2], foreign)
    with pytest.raises(UserError, match=r"foreign\.pt: not a DIRBench checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(UserError, match=r"absent\.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pt")
