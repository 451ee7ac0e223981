//! Where a cold install's time goes: times each step of turning a component
//! into a first instance on the Winch tier — read, sha256, compile (per
//! engine setting), serialize, write to disk, link, first and second
//! instantiation — in wall time and in this process's CPU time (the machine
//! is shared, so CPU time is the figure that survives other load).
//!
//! `cargo run --workspace --example cold_phases -- FILE.wasm [--serial] [--only N]`
//! (dependencies are optimized even in the dev profile, so the compile
//! figures are representative; `--serial` also compiles on one thread).

use std::time::{Duration, Instant};

use sha2::Digest as _;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, OptLevel, Store, Strategy};

/// This process's user + system CPU time (Linux; zero elsewhere).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

/// Runs `f`, printing its wall and CPU time under `what`.
fn step<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let (wall, cpu0) = (Instant::now(), cpu());
    let out = f();
    println!(
        "  {what:44} wall {:7.0} ms   cpu {:7.0} ms",
        wall.elapsed().as_secs_f64() * 1e3,
        (cpu() - cpu0).as_secs_f64() * 1e3
    );
    out
}

fn engine(tune: impl FnOnce(&mut Config)) -> Engine {
    let mut config = Config::new();
    config.strategy(Strategy::Winch).epoch_interruption(true);
    tune(&mut config);
    Engine::new(&config).expect("engine")
}

/// A store whose epoch deadline never passes.
fn store(engine: &Engine) -> Store<()> {
    let mut store = Store::new(engine, ());
    store.set_epoch_deadline(u64::MAX);
    store
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .expect("usage: cold_phases FILE.wasm [--serial]");
    let serial = args.iter().any(|a| a == "--serial");
    let bytes = step("read", || std::fs::read(path).expect("read the file"));
    step("sha256", || sha2::Sha256::digest(&bytes));
    println!("{path}: {:.1} MiB", bytes.len() as f64 / (1 << 20) as f64);

    let mut settings: Vec<(&str, Engine)> = vec![
        (
            "winch, trampolines optimized (berth before 2026-11-30)",
            engine(|_| {}),
        ),
        (
            "winch, trampolines at opt-level none (berth before 2026-12-01)",
            engine(|c| {
                c.cranelift_opt_level(OptLevel::None);
            }),
        ),
        (
            "winch, opt-level none, no address map",
            engine(|c| {
                c.cranelift_opt_level(OptLevel::None)
                    .generate_address_map(false);
            }),
        ),
        (
            "winch, opt-level none, no native unwind info",
            engine(|c| {
                c.cranelift_opt_level(OptLevel::None)
                    .native_unwind_info(false);
            }),
        ),
        (
            "winch, opt-level none, trampolines through a cache (berth now)",
            engine(|c| {
                c.cranelift_opt_level(OptLevel::None)
                    .enable_incremental_compilation(std::sync::Arc::new(
                        berth_runtime::TrampolineCache::new(berth_runtime::trampolines::BUDGET),
                    ))
                    .expect("incremental cache");
            }),
        ),
    ];
    if serial {
        settings.push((
            "winch, one thread",
            engine(|c| {
                c.parallel_compilation(false);
            }),
        ));
    }
    // `--only N`: just the Nth setting (0-based), e.g. under a profiler.
    let only: Option<usize> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (i, (name, engine)) in settings.into_iter().enumerate() {
        if only.is_some_and(|only| only != i) {
            continue;
        }
        println!("{name}:");
        let component = step("compile (Component::new)", || {
            Component::new(&engine, &bytes).expect("compile")
        });
        let code = step("serialize", || component.serialize().expect("serialize"));
        let file = dir.path().join("code.cwasm");
        step("write + fsync the serialized code", || {
            let _ = std::fs::remove_file(&file);
            let out = std::fs::File::create(&file).expect("create");
            std::io::Write::write_all(&mut &out, &code).expect("write");
            out.sync_data().expect("fsync");
        });
        println!(
            "  ({:.1} MiB of code)",
            code.len() as f64 / (1 << 20) as f64
        );
        let mut linker: Linker<()> = Linker::new(&engine);
        linker
            .define_unknown_imports_as_traps(&component)
            .expect("trap imports");
        let pre = step("link (instantiate_pre)", || {
            linker.instantiate_pre(&component).expect("link")
        });
        step("first instantiation (memory image)", || {
            pre.instantiate(&mut store(&engine)).expect("instantiate")
        });
        step("second instantiation", || {
            pre.instantiate(&mut store(&engine)).expect("instantiate")
        });
        // SAFETY: written just above by `serialize` of this engine.
        #[allow(unsafe_code)]
        let mapped = step("deserialize_file (a cache hit)", || unsafe {
            Component::deserialize_file(&engine, &file).expect("deserialize")
        });
        let pre = linker.instantiate_pre(&mapped).expect("link");
        step("first instantiation of the mapped code", || {
            pre.instantiate(&mut store(&engine)).expect("instantiate")
        });
    }
}
