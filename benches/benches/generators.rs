//! Generator throughput. Targets (tasks issue): at least 1M path-star G(2,5,50) examples per
//! second on one thread in release, and 200k + 20k examples written to disk in under 2 s.
//!
//! `cargo bench -p benches --bench generators`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tasks::TaskSpec;
use tasks::creative::{CreativeParams, SiblingParams, TriangleParams};
use tasks::dataset::{self, Format, SplitSizes};
use tasks::long_range::{GraphWalkParams, KeyRecallParams, PrefixFunctionParams};
use tasks::path_star::PathStarParams;

fn sample_throughput(c: &mut Criterion) {
    let specs = [
        TaskSpec::PathStar(PathStarParams::default()),
        TaskSpec::PathStar(PathStarParams { degree: 5, path_len: 5, nodes: 50, reverse: false }),
        TaskSpec::KeyRecall(KeyRecallParams::default()),
        TaskSpec::PrefixFunction(PrefixFunctionParams::default()),
        TaskSpec::GraphWalk(GraphWalkParams::default()),
        TaskSpec::Sibling(SiblingParams::default()),
        TaskSpec::Triangle(TriangleParams::default()),
        TaskSpec::Circle(CreativeParams::circle()),
        TaskSpec::Line(CreativeParams::line()),
    ];
    let mut group = c.benchmark_group("sample");
    const BATCH: u64 = 10_000;
    group.throughput(Throughput::Elements(BATCH));
    for spec in specs {
        let task = spec.build().expect("valid spec");
        let name = match &spec {
            TaskSpec::PathStar(p) => {
                format!("path-star-G({},{},{})", p.degree, p.path_len, p.nodes)
            }
            s => s.name().to_string(),
        };
        group.bench_function(name, |b| {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            b.iter(|| {
                for _ in 0..BATCH {
                    black_box(task.sample(&mut rng));
                }
            })
        });
    }
    group.finish();
}

fn write_to_disk(c: &mut Criterion) {
    let task = TaskSpec::PathStar(PathStarParams::default()).build().expect("valid spec");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sizes = SplitSizes { train: 200_000, test: 20_000, seed: 0 };
    let mut group = c.benchmark_group("write");
    group.sample_size(10);
    group.throughput(Throughput::Elements(sizes.train + sizes.test));
    group.bench_function("path-star-G(2,5,50)-200k+20k-ntf", |b| {
        b.iter(|| dataset::write_dataset(task.as_ref(), sizes, Format::Ntf, dir.path(), &mut |_| {}).expect("written"))
    });
    group.finish();
}

criterion_group!(benches, sample_throughput, write_to_disk);
criterion_main!(benches);
