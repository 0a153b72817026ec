"""What a run records of its machine, and the portable CPU kernels `leti train` sets before torch computes."""

from __future__ import annotations

import platform

import pytest

from trainers.machine import (PORTABLE_KERNELS, cpu_description, machine_record, portable_cpu_kernels,
                              requested_cpu_kernels)


def test_portable_kernels_are_set_only_where_the_user_set_nothing():
    model, flags = cpu_description()
    environ = {"MKL_CBWR": "COMPATIBLE"}
    applied = portable_cpu_kernels(environ)
    if platform.machine().lower() in ("x86_64", "amd64") and "avx2" in flags:
        assert applied == {"ATEN_CPU_CAPABILITY": PORTABLE_KERNELS["ATEN_CPU_CAPABILITY"]}
        assert environ == {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "avx2"}
    else:  # an Arm CPU, or one without AVX2: nothing to pin (and torch would refuse avx2)
        assert applied == {} and environ == {"MKL_CBWR": "COMPATIBLE"}


def test_the_machine_record_names_the_cpu_and_torchs_kernels():
    torch = pytest.importorskip("torch")
    record = machine_record()
    assert record["cpu"] == cpu_description()[0] and record["cpu_count"] >= 1
    assert record["torch"]["version"] == torch.__version__
    assert record["torch"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["torch"]["threads"] == torch.get_num_threads()
    if torch.backends.mkl.is_available():
        assert any("Math Kernel Library" in line for line in record["torch"]["build"])


def test_cpu_kernels_are_read_before_torch_from_the_command_line_or_the_recipe(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("cpu_kernels: native\nnum_iterations: 2\n")
    assert requested_cpu_kernels([]) == "portable"
    assert requested_cpu_kernels(["--cpu_kernels", "native"]) == "native"
    assert requested_cpu_kernels(["--cpu_kernels=native"]) == "native"
    assert requested_cpu_kernels(["--config", str(recipe)]) == "native"
    assert requested_cpu_kernels(["--config", str(recipe), "--cpu_kernels", "portable"]) == "portable"
    assert requested_cpu_kernels(["--config", str(tmp_path / "missing.yaml")]) == "portable"  # the parser says why
