//! dudect-style timing test of ztgate's secret compares (filled in by the hardening work).
use dudect_bencher::{BenchRng, Class, CtRunner, ctbench_main};

fn placeholder(runner: &mut CtRunner, _rng: &mut BenchRng) {
    runner.run_one(Class::Left, || ());
    runner.run_one(Class::Right, || ());
}

ctbench_main!(placeholder);
