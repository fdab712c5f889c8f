//! `validate` on large files with a problem in every activity: its time must
//! grow with the size of the file, not with its square.

use std::path::Path;
use std::process::Command;

use anyhow::ensure;
use crosscast_test_servers::workflows;

use crate::{default_bin, machine, measure_expecting};

/// Validates a generated file of each size and prints time and memory per
/// activity: a flat column is linear.
pub fn run(sizes: &[usize], dir: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let data = dir.join("data");
    println!("# validate benchmark: one problem per activity");
    println!("machine: {}", machine());
    crate::crosscast(&data, &["init"])?;
    println!("| activities | problems | time | per activity | peak RSS |");
    println!("|---|---|---|---|---|");
    for &n in sizes {
        let file = dir.join(format!("many-{n}.toml"));
        std::fs::write(&file, workflows::with_one_problem_per_activity(n))?;
        let mut cmd = Command::new(default_bin());
        cmd.arg("--data")
            .arg(&data)
            .arg("validate")
            .arg(&file)
            .stderr(std::process::Stdio::piped());
        // Problems go to stderr, which is counted, not shown.
        let out = cmd.output()?;
        let prefix = file.display().to_string();
        let problems = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .count();
        ensure!(
            problems == n,
            "{n} activities: {problems} problems reported"
        );
        let m = measure_expecting(
            Command::new(default_bin())
                .arg("--data")
                .arg(&data)
                .arg("validate")
                .arg(&file)
                .stderr(std::process::Stdio::null()),
            2,
        )?;
        println!(
            "| {n} | {problems} | {:.2} s | {:.1} µs | {:.0} MB |",
            m.secs,
            m.secs * 1e6 / n as f64,
            m.max_rss_mb
        );
    }
    Ok(())
}
