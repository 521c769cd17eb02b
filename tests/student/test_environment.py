"""The one-line description of a machine that results files, run folders and model cards carry."""

from __future__ import annotations

from student.environment import describe


def test_a_machine_is_one_line_of_cpu_threads_kernel_settings_and_torch():
    machine = {"cpu": "AMD EPYC (AVX-512)", "torch_threads": 2, "torch": "2.14.1"}
    assert describe(machine) == "AMD EPYC (AVX-512), 2 threads, torch 2.14.1"
    one = machine | {"torch_threads": 1, "kernels": {"OMP_NUM_THREADS": "1"}}
    assert describe(one) == "AMD EPYC (AVX-512), 1 thread, OMP_NUM_THREADS=1, torch 2.14.1"
