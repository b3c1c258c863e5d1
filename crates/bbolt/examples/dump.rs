//! Prints every bucket, key and value of a bbolt file (an etcd snapshot or db):
//! `cargo run --release -p bbolt --example dump -- FILE`. A trailing SHA-256 (as
//! `etcdctl snapshot save` appends) is ignored.

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: dump FILE");
        std::process::exit(2);
    };
    let mut bytes = std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1)
    });
    if bytes.len() % 512 == 32 {
        bytes.truncate(bytes.len() - 32);
    }
    let run = || -> Result<(), bbolt::Error> {
        let db = bbolt::Db::open(bytes)?;
        println!("pages {} of {} bytes, txid {}", db.pages(), db.page_size(), db.txid());
        for name in db.buckets()? {
            println!("bucket {}", String::from_utf8_lossy(&name));
            db.for_each(&name, &mut |k, v| {
                println!("  {} = {}", hex(k), hex(v));
                Ok(())
            })?;
        }
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("{path}: {e}");
        std::process::exit(1);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
