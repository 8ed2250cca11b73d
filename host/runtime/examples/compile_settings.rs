// TEMPORARY experiment (not committed): compile time of the embedded connector under several settings.
use std::time::Instant;
use wasmtime::{Config, Engine, OptLevel, RegallocAlgorithm};
use wasmtime::component::Component;

fn cpu() -> f64 {
    let mut u: libc_rusage = unsafe { std::mem::zeroed() };
    unsafe { getrusage(0, &mut u) };
    (u.ru_utime.0 as f64 + u.ru_utime.1 as f64 / 1e6) + (u.ru_stime.0 as f64 + u.ru_stime.1 as f64 / 1e6)
}
#[repr(C)]
struct libc_rusage { ru_utime: (i64, i64), ru_stime: (i64, i64), rest: [i64; 14] }
unsafe extern "C" { fn getrusage(who: i32, usage: *mut libc_rusage) -> i32; }

fn main() {
    let wasm = ionflow_runtime::EMBEDDED_CONNECTOR;
    let reps: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(5);
    let parallel: bool = std::env::args().nth(2).map(|s| s == "par").unwrap_or(true);
    for (name, opt, ra) in [
        ("speed+backtracking", OptLevel::Speed, RegallocAlgorithm::Backtracking),
        ("none+backtracking", OptLevel::None, RegallocAlgorithm::Backtracking),
        ("speed+singlepass", OptLevel::Speed, RegallocAlgorithm::SinglePass),
        ("none+singlepass", OptLevel::None, RegallocAlgorithm::SinglePass),
    ] {
        let mut c = Config::new();
        c.epoch_interruption(true);
        c.concurrency_support(false);
        c.cranelift_opt_level(opt);
        c.cranelift_regalloc_algorithm(ra);
        c.parallel_compilation(parallel);
        let engine = Engine::new(&c).unwrap();
        let mut walls = vec![];
        let mut cpus = vec![];
        let mut size = 0;
        for _ in 0..reps {
            let (t, c0) = (Instant::now(), cpu());
            let comp = Component::new(&engine, wasm).unwrap();
            walls.push(t.elapsed().as_secs_f64() * 1000.0);
            cpus.push((cpu() - c0) * 1000.0);
            size = comp.serialize().unwrap().len();
        }
        walls.sort_by(f64::total_cmp);
        cpus.sort_by(f64::total_cmp);
        println!("{name:22} wall median {:7.1} ms min {:7.1}  cpu median {:7.1} ms  artifact {} KB", walls[reps/2], walls[0], cpus[reps/2], size/1024);
    }
}
