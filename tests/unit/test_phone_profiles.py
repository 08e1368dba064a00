"""The big-core phone classes of toolchains/EMUPHONE.md's family (phone-a78, phone-x1): ARMv8.2
cores with fp16 arithmetic and dot product, no python (the native agent), ncnn on the big
cores. (emulated-phone-a76, phone-big-a76 and phone-little-a55 are tested in test_boards.py.)"""

from __future__ import annotations

import pytest

from edgecal.boards.config import PROFILES_DIR, load_profile

try:
    import tomllib
except ModuleNotFoundError:  # python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

BIG_CORE_PHONES = {"phone-a78": "cortex-a78", "phone-x1": "cortex-x1"}


@pytest.mark.parametrize("name", sorted(BIG_CORE_PHONES))
def test_big_core_phone_profiles(name: str) -> None:
    p = load_profile(name)
    assert (p.name, p.arch, p.cpu, p.cores, p.threads) == (
        name,
        "aarch64",
        BIG_CORE_PHONES[name],
        8,
        4,
    )
    assert {"fphp", "asimdhp", "asimddp", "asimdrdm"} <= set(p.cpu_features)
    assert {"i8mm", "bf16"} <= set(p.cpu_features_absent)
    assert p.runtime.fp16_storage and p.runtime.fp16_arithmetic and not p.runtime.bf16_storage
    assert (p.python, p.agent) == (None, "native")
    raw = tomllib.loads((PROFILES_DIR / f"{name}.toml").read_text())
    assert raw["affinity"] == "big"  # pinned to the big cores, as apps pin ncnn
