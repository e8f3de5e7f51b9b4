//! Local account passwords: argon2id hashes in PHC string form.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), so each carries its own
//! parameters and salt; raising [`PasswordParams`] later leaves old hashes verifiable, and
//! [`Passwords::needs_rehash`] says when to replace one at the next successful login. The
//! default parameters are OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane). Verification is
//! argon2's: the output is computed with the stored parameters and salt and compared with the
//! stored one in constant time (`password_hash::Output`'s equality). A login for an unknown
//! user should still call [`Passwords::verify_absent`], which does the same work against a
//! dummy hash, so the answer's timing does not tell which user names exist.
//!
//! Each hash needs `memory_kib` KiB of working memory. [`Passwords::hash`] and
//! [`Passwords::verify`] allocate it for the one call; a thread that hashes again and again
//! (the hub's hashing workers) keeps one [`HashMemory`] and passes it to the `_in` variants
//! instead, so its memory is allocated once and never handed back to the allocator: a flood of
//! logins cannot grow the heap.

use std::fmt;

use argon2::password_hash::{self, Output, ParamsString, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::secret::{RandomnessError, fill_random};

#[cfg(test)]
mod tests;

/// Passwords longer than this many bytes are refused: hashing megabytes on request is a
/// denial-of-service lever, and no one types such a password.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Salt length in bytes (the PHC recommendation).
const SALT_BYTES: usize = 16;

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory per hash, in KiB. Default: 19456 (19 MiB).
    pub memory_kib: u32,
    /// Passes over the memory. Default: 2.
    pub iterations: u32,
    /// Lanes. Default: 1.
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

/// A stored password hash: a PHC string. Its `Debug` output is redacted, since an offline
/// attack on a leaked hash is the threat it exists to slow down.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Accepts a PHC string (from storage or configuration).
    ///
    /// # Errors
    ///
    /// [`PasswordError::Malformed`] if it is not a PHC string, [`PasswordError::Unsupported`]
    /// if it is not an argon2 hash.
    pub fn from_phc(phc: &str) -> Result<Self, PasswordError> {
        parse_phc(phc)?;
        Ok(Self(phc.to_owned()))
    }

    /// The PHC string, for storage.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(…)")
    }
}

/// argon2's working memory for one hash (1 KiB blocks), allocated once and reused by one
/// thread from hash to hash. argon2 overwrites every block it uses on its first pass, so
/// nothing of one hash affects the next.
pub struct HashMemory {
    blocks: Vec<Block>,
}

impl HashMemory {
    /// The memory's size in KiB (argon2 blocks).
    pub fn kib(&self) -> usize {
        self.blocks.len()
    }

    /// The first `count` blocks, or, for a hash that needs more than this memory holds (one
    /// stored with larger parameters), `spare` filled with a fresh allocation for this hash
    /// alone: it is freed when the hash ends and this memory keeps its size.
    fn blocks<'a>(&'a mut self, count: usize, spare: &'a mut Vec<Block>) -> &'a mut [Block] {
        match self.blocks.get_mut(..count) {
            Some(blocks) => blocks,
            None => {
                *spare = vec![Block::default(); count];
                spare
            }
        }
    }
}

impl fmt::Debug for HashMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashMemory")
            .field("kib", &self.kib())
            .finish()
    }
}

/// Hashes and verifies passwords with fixed argon2id parameters.
#[derive(Clone)]
pub struct Passwords {
    argon2: Argon2<'static>,
    params: Params,
    /// A hash of a random password under `params`, for [`Passwords::verify_absent`].
    dummy: PasswordHash,
}

impl fmt::Debug for Passwords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Passwords")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Passwords {
    /// Checks the parameters and prepares a hasher. Computes one hash (the dummy).
    ///
    /// # Errors
    ///
    /// [`PasswordError::Params`] for parameters argon2 refuses (memory below 8 KiB per lane,
    /// zero passes or lanes), [`PasswordError::Randomness`] if no salt can be drawn.
    pub fn new(params: PasswordParams) -> Result<Self, PasswordError> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(PasswordError::Params)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut this = Self {
            argon2,
            params,
            dummy: PasswordHash(String::new()),
        };
        let mut random = [0_u8; 32];
        fill_random(&mut random)?;
        this.dummy = this.hash(&crate::secret::hex(&random))?;
        Ok(this)
    }

    /// Working memory for hashes under this hasher's parameters (`memory_kib` KiB), allocated
    /// now, for a thread that hashes repeatedly to pass to [`Passwords::hash_in`],
    /// [`Passwords::verify_in`] and [`Passwords::verify_absent_in`].
    pub fn memory(&self) -> HashMemory {
        HashMemory {
            blocks: vec![Block::default(); self.params.block_count()],
        }
    }

    /// Hashes `password` with a fresh random salt, in memory allocated for this call.
    ///
    /// # Errors
    ///
    /// As [`Passwords::hash_in`].
    pub fn hash(&self, password: &str) -> Result<PasswordHash, PasswordError> {
        self.hash_in(password, &mut self.memory())
    }

    /// Hashes `password` with a fresh random salt, in `memory`. The PHC string is the one
    /// argon2's `PasswordHasher::hash_password` makes for the same salt.
    ///
    /// # Errors
    ///
    /// [`PasswordError::Empty`] or [`PasswordError::TooLong`] for an unacceptable password,
    /// [`PasswordError::Randomness`] if no salt can be drawn.
    pub fn hash_in(
        &self,
        password: &str,
        memory: &mut HashMemory,
    ) -> Result<PasswordHash, PasswordError> {
        if password.is_empty() {
            return Err(PasswordError::Empty);
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        let mut salt = [0_u8; SALT_BYTES];
        fill_random(&mut salt)?;
        self.hash_with_salt(password.as_bytes(), &salt, memory)
    }

    /// The PHC string of `password` under this hasher's parameters and `salt`, computed in
    /// `memory`: the fields in the order and encoding of argon2's own `hash_password`.
    fn hash_with_salt(
        &self,
        password: &[u8],
        salt_bytes: &[u8],
        memory: &mut HashMemory,
    ) -> Result<PasswordHash, PasswordError> {
        let salt = SaltString::encode_b64(salt_bytes).map_err(PasswordError::Hash)?;
        let output_len = self
            .params
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let mut spare = Vec::new();
        let blocks = memory.blocks(self.params.block_count(), &mut spare);
        let output = Output::init_with(output_len, |out| {
            Ok(self.argon2.hash_password_into_with_memory(
                password,
                salt_bytes,
                out,
                &mut *blocks,
            )?)
        })
        .map_err(PasswordError::Hash)?;
        let phc = password_hash::PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(PasswordError::Hash)?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(PasswordHash(phc.to_string()))
    }

    /// Whether `password` matches `hash`, in memory allocated for this call.
    ///
    /// # Errors
    ///
    /// As [`Passwords::verify_in`].
    pub fn verify(&self, password: &str, hash: &PasswordHash) -> Result<bool, PasswordError> {
        self.verify_in(password, hash, &mut self.memory())
    }

    /// Whether `password` matches `hash`, computed in `memory`: argon2 with the hash's own
    /// algorithm, version, parameters and salt, the output compared with the stored one in
    /// constant time. A wrong password is `Ok(false)`; so is an empty or over-long one,
    /// without hashing it. A hash whose parameters need more memory than `memory` holds (one
    /// made with larger parameters, which [`Passwords::needs_rehash`] reports) is computed in
    /// an allocation of its own, freed when it ends.
    ///
    /// # Errors
    ///
    /// [`PasswordError::Malformed`] or [`PasswordError::Unsupported`] if the stored hash is not
    /// a usable argon2 PHC string.
    pub fn verify_in(
        &self,
        password: &str,
        hash: &PasswordHash,
        memory: &mut HashMemory,
    ) -> Result<bool, PasswordError> {
        let parsed = parse_phc(&hash.0)?;
        if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        // As argon2's `PasswordVerifier`: without a salt nothing matches.
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let algorithm = Algorithm::try_from(parsed.algorithm).map_err(PasswordError::Malformed)?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v)
                .map_err(|e| PasswordError::Malformed(password_hash::Error::from(e)))?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).map_err(PasswordError::Malformed)?;
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let mut spare = Vec::new();
        let blocks = memory.blocks(params.block_count(), &mut spare);
        let computed = Output::init_with(expected.len(), |out| {
            let mut decoded = [0_u8; Salt::MAX_LENGTH];
            let salt = salt.decode_b64(&mut decoded)?;
            Ok(argon2.hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                out,
                &mut *blocks,
            )?)
        })
        .map_err(PasswordError::Malformed)?;
        // `Output`'s equality is constant-time.
        Ok(computed == expected)
    }

    /// Does the work of [`Passwords::verify`] for a user who does not exist (or has no
    /// password), and answers `false`.
    pub fn verify_absent(&self, password: &str) -> bool {
        self.verify_absent_in(password, &mut self.memory())
    }

    /// [`Passwords::verify_absent`] in `memory`.
    pub fn verify_absent_in(&self, password: &str, memory: &mut HashMemory) -> bool {
        // The dummy is a hash of a random string nobody knows; the result is always false,
        // and is discarded so that no error path answers faster either.
        let _ = self.verify_in(password, &self.dummy, memory);
        false
    }

    /// Whether `hash` was made with other parameters or another algorithm than this hasher's,
    /// and should be replaced after the next successful login.
    pub fn needs_rehash(&self, hash: &PasswordHash) -> bool {
        let Ok(parsed) = parse_phc(&hash.0) else {
            return true;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return true;
        }
        if parsed.version != Some(Version::V0x13.into()) {
            return true;
        }
        match Params::try_from(&parsed) {
            Ok(params) => {
                params.m_cost() != self.params.m_cost()
                    || params.t_cost() != self.params.t_cost()
                    || params.p_cost() != self.params.p_cost()
            }
            Err(_) => true,
        }
    }
}

/// Parses a PHC string that argon2 can verify: an argon2 variant, with an output.
fn parse_phc(phc: &str) -> Result<password_hash::PasswordHash<'_>, PasswordError> {
    let parsed = password_hash::PasswordHash::new(phc).map_err(PasswordError::Malformed)?;
    let argon2 = [Algorithm::Argon2id, Algorithm::Argon2i, Algorithm::Argon2d];
    if parsed.hash.is_none() || !argon2.iter().any(|a| a.ident() == parsed.algorithm) {
        return Err(PasswordError::Unsupported);
    }
    Ok(parsed)
}

/// Why hashing or verifying a password failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The password is empty.
    #[error("the password is empty")]
    Empty,
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    #[error("the password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// argon2 refused the configured parameters.
    #[error("invalid argon2 parameters")]
    Params(#[source] argon2::Error),
    /// Hashing failed.
    #[error("password hashing failed")]
    Hash(#[source] password_hash::Error),
    /// A stored hash is not a usable argon2 PHC string.
    #[error("the stored password hash is malformed")]
    Malformed(#[source] password_hash::Error),
    /// A stored hash is a PHC string, but not an argon2 hash with an output.
    #[error("the stored password hash is not an argon2 hash")]
    Unsupported,
    /// No salt could be drawn.
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
}
