use super::*;
use std::collections::BTreeMap;

type Model = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

fn write(model: &Model) -> Vec<u8> {
    let mut out = Vec::new();
    let mut announced = 0;
    let n = write_db(
        &mut out,
        7,
        &mut |n| {
            announced = n;
            Ok(())
        },
        &mut |w| {
            for (name, kvs) in model {
                w.bucket(name)?;
                for (k, v) in kvs {
                    w.put(k, v)?;
                }
            }
            Ok(())
        },
    )
    .unwrap();
    assert_eq!((n, announced), (out.len() as u64, out.len() as u64));
    out
}

fn read(bytes: Vec<u8>) -> Result<Model, Error> {
    let db = Db::open(bytes)?;
    let mut model = Model::new();
    for name in db.buckets()? {
        let mut kvs = BTreeMap::new();
        assert!(db.for_each(&name, &mut |k, v| {
            kvs.insert(k.to_vec(), v.to_vec());
            Ok(())
        })?);
        model.insert(name, kvs);
    }
    Ok(model)
}

/// SplitMix64: a seeded generator for the property tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_model(rng: &mut Rng, keys_max: u64) -> Model {
    let mut model = Model::new();
    for b in 0..1 + rng.below(4) {
        let mut kvs = BTreeMap::new();
        for _ in 0..rng.below(keys_max) {
            let key = format!("k{:08}", rng.below(1 << 20)).into_bytes();
            // Mostly small values; some spill over several pages.
            let len = if rng.below(50) == 0 { rng.below(20_000) } else { rng.below(100) };
            kvs.insert(key, vec![b'a' + (len % 26) as u8; len as usize]);
        }
        model.insert(format!("bucket{b}").into_bytes(), kvs);
    }
    model
}

/// What is written reads back the same: empty buckets (inline), overflow pages for
/// large values, several levels of branch pages.
#[test]
fn written_files_read_back_as_the_model() {
    let mut rng = Rng(42);
    for keys_max in [1, 2, 10, 300, 5000] {
        let model = random_model(&mut rng, keys_max);
        let bytes = write(&model);
        assert_eq!(bytes.len() % PAGE_SIZE as usize, 0);
        assert_eq!(read(bytes).unwrap(), model, "keys_max {keys_max}");
    }
    let mut big = Model::new();
    let kvs = (0..60_000u32).map(|i| (i.to_be_bytes().to_vec(), vec![1u8; 40])).collect();
    big.insert(b"key".to_vec(), kvs);
    assert_eq!(read(write(&big)).unwrap(), big, "three tree levels");
}

/// The writer refuses keys or buckets out of order instead of writing a broken tree.
#[test]
fn writer_refuses_unordered_input() {
    let mut out = Vec::new();
    let e = write_db(&mut out, 1, &mut |_| Ok(()), &mut |w| {
        w.bucket(b"a")?;
        w.put(b"2", b"")?;
        w.put(b"1", b"")
    });
    assert!(e.unwrap_err().to_string().contains("not after"));
    let e = write_db(&mut out, 1, &mut |_| Ok(()), &mut |w| {
        w.bucket(b"b")?;
        w.bucket(b"a")
    });
    assert!(e.unwrap_err().to_string().contains("not after"));
}

/// Damage anywhere — a flipped byte in any page type, a truncation at any point, a
/// random page — gives an error or (where the byte is data) other data: never a panic.
#[test]
fn damaged_files_are_errors_never_panics() {
    let mut rng = Rng(7);
    let model = random_model(&mut rng, 400);
    let good = write(&model);
    for round in 0..3000 {
        let mut bytes = good.clone();
        match round % 3 {
            0 => {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            1 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
            _ => {
                // A header field or element of a random page set to a random value.
                let page = rng.below((bytes.len() / PAGE_SIZE as usize) as u64) as usize;
                let at = page * PAGE_SIZE as usize + rng.below(64) as usize;
                bytes[at] = rng.next() as u8;
            }
        }
        let _ = read(bytes);
    }
    let e = read(good[..PAGE_SIZE as usize * 2].to_vec()).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    let e = read(vec![0u8; 10_000]).unwrap_err().to_string();
    assert!(e.contains("not a bbolt file"), "{e}");
}

/// Both meta pages damaged: refused, naming the check that failed.
#[test]
fn a_file_with_both_metas_damaged_is_refused() {
    let mut bytes = write(&random_model(&mut Rng(1), 10));
    bytes[16 + 40] ^= 1;
    assert!(read(bytes.clone()).is_ok(), "meta 1 still serves");
    bytes[PAGE_SIZE as usize + 16 + 40] ^= 1;
    let e = read(bytes).unwrap_err().to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
}

/// A page that points back at itself is refused, not walked forever.
#[test]
fn a_cycle_is_refused() {
    let mut model = Model::new();
    let kvs = (0..2000u32).map(|i| (i.to_be_bytes().to_vec(), vec![1u8; 40])).collect();
    model.insert(b"key".to_vec(), kvs);
    let mut bytes = write(&model);
    // Find the bucket's branch page and point its first child at itself.
    let pages = bytes.len() / PAGE_SIZE as usize;
    let branch = (3..pages)
        .find(|p| bytes[p * PAGE_SIZE as usize + 8] == FLAG_BRANCH as u8)
        .expect("a branch page");
    let at = branch * PAGE_SIZE as usize + PAGE_HEADER_BYTES + 8;
    bytes[at..at + 8].copy_from_slice(&(branch as u64).to_le_bytes());
    let e = read(bytes).unwrap_err().to_string();
    assert!(e.contains("reached twice"), "{e}");
}

/// Every field of every page header and of the first elements, in every page type
/// (meta, freelist, branch, leaf), set to extreme values: an error or other data, never
/// a panic.
#[test]
fn every_page_type_survives_extreme_header_values() {
    let mut model = Model::new();
    let kvs = (0..3000u32).map(|i| (i.to_be_bytes().to_vec(), vec![1u8; 30])).collect();
    model.insert(b"key".to_vec(), kvs);
    model.insert(b"empty".to_vec(), BTreeMap::new());
    let good = write(&model);
    let pages = good.len() / PAGE_SIZE as usize;
    let mut kinds = std::collections::BTreeSet::new();
    for page in 0..pages {
        let base = page * PAGE_SIZE as usize;
        kinds.insert(u16::from_le_bytes([good[base + 8], good[base + 9]]));
        for at in 0..PAGE_HEADER_BYTES + 2 * ELEMENT_BYTES {
            for value in [0x00, 0xff] {
                let mut bytes = good.clone();
                bytes[base + at] = value;
                let _ = read(bytes);
            }
        }
    }
    let want = [FLAG_BRANCH, FLAG_LEAF, FLAG_META, FLAG_FREELIST];
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), want, "every page type was damaged");
}
