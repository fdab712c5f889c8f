//! Writes a deterministic sample audience: `crosscast-sample DIR [N] [SEED]`.

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "sample".into());
    let n = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let seed = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let (r, s) = crosscast_test_servers::sample::write(std::path::Path::new(&dir), n, seed)?;
    println!("{}\n{}", r.display(), s.display());
    Ok(())
}
