"""bench/slo_slow_sim.py: the simulator on a machine slower than its profile."""

from bench.slo_slow_sim import CPU_PROFILE, main, slower
from policies.profile import Profile


def test_slower_scales_every_step_and_keeps_the_traces():
    profile = Profile.load(CPU_PROFILE)
    slow = slower(profile, 2.0)
    assert [s for _, _, s in slow.cost] == [2.0 * s for _, _, s in profile.cost]
    assert slow.traces is profile.traces


def test_a_slower_machine_meets_fewer_of_the_same_requests(capsys):
    args = ["--workload", "interactive", "--load", "high", "--seeds", "0", "--policies", "ar",
            "--requests", "30"]
    main([*args, "--truth", "1.0"])
    main([*args, "--truth", "2.5"])
    met = [int(line.split()[-1]) for line in capsys.readouterr().out.splitlines()
           if line.startswith("met over")]
    assert met[0] > met[1]
