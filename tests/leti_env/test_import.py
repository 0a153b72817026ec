import subprocess
import sys


def test_import_is_light_and_registers_ids():
    code = ("import sys, leti_env, gymnasium as gym\n"
            "heavy = sorted(m for m in ('torch', 'trl', 'transformers', 'datasets', 'openenv', 'fastapi') if m in sys.modules)\n"
            "assert not heavy, heavy\n"
            "assert 'LETI-MBPP' in gym.registry and 'LETI-HumanEval' in gym.registry\n")
    subprocess.run([sys.executable, "-c", code], check=True)
