//! The Lua scripts that make each step atomic across replicas, and how they are run over a
//! batch of keys on one node or in Cluster.

use std::sync::LazyLock;

use redis::{ErrorKind, FromRedisValue, Script, Value};

use super::{RedisError, RedisSeen};

/// Value of a key whose event is safe and whose content's fingerprint is unknown (written by
/// versions before fingerprints, and by [`RedisSeen::commit`]). Otherwise `seen:<16 hex>`.
pub(super) const SEEN: &str = "seen";

/// Claims every key of a request in one script run (one round trip for a whole batch). Per
/// key, SET NX takes a free key; otherwise the holder decides the answer. The remaining PTTL
/// of a `seen` key lets the local memory forget the id when Redis does.
/// Returns one {code, pttl, value} per key: 0 claimed, 1 seen (value `seen` or `seen:<fp>`),
/// 2 in flight, 3 a foreign value.
const CLAIM_LUA: &str = r#"
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = {0, 0, ''}
  else
    local v = redis.call('GET', k)
    local t = redis.call('PTTL', k)
    if v == 'seen' or (v and string.sub(v, 1, 5) == 'seen:') then
      out[i] = {1, t, v}
    elseif v and string.sub(v, 1, 6) == 'claim:' then
      out[i] = {2, t, ''}
    else
      out[i] = {3, t, ''}
    end
  end
end
return out
"#;

/// Marks every key seen: ARGV[1] `set` (the event is safe: unconditional) or `nx` (a write
/// deferred while Redis was away: only where no replica wrote since, the key absent or holding
/// this instance's own claim, ARGV[3], taken by a call whose answer was lost), ARGV[2] the TTL
/// in ms, ARGV[3 + i] the value for KEYS[i].
const COMMIT_LUA: &str = r#"
for i, k in ipairs(KEYS) do
  local write = ARGV[1] ~= 'nx'
  if not write then
    local v = redis.call('GET', k)
    write = (not v) or v == ARGV[3]
  end
  if write then
    redis.call('SET', k, ARGV[3 + i], 'PX', ARGV[2])
  end
end
return #KEYS
"#;

/// Compare-and-delete over every key: only the claims this instance wrote are removed, never
/// another replica's claim nor a `seen` mark. Returns how many were deleted.
const RELEASE_LUA: &str = r#"
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    n = n + redis.call('DEL', k)
  end
end
return n
"#;

pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM_LUA));
pub(super) static COMMIT: LazyLock<Script> = LazyLock::new(|| Script::new(COMMIT_LUA));
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));

impl RedisSeen {
    /// Runs `script` over `rkeys`: one run over all of them on a single node; in Cluster one
    /// run per key (a script may only touch one slot), sent concurrently, the answers in key
    /// order. `args(inv, range)` adds the arguments for the keys `rkeys[range]`. One round trip
    /// is counted either way: the caller waits for one exchange's time.
    pub(super) async fn script_over<T>(
        &self,
        script: &'static Script,
        rkeys: &[String],
        args: impl Fn(&mut redis::ScriptInvocation<'static>, std::ops::Range<usize>),
    ) -> Result<Vec<T>, RedisError>
    where
        T: FromRedisValue + Send + 'static,
    {
        if !self.inner.cluster {
            let mut inv = script.prepare_invoke();
            for k in rkeys {
                inv.key(k);
            }
            args(&mut inv, 0..rkeys.len());
            let one: Value = self
                .bounded(|mut c| async move { inv.invoke_async(&mut c).await })
                .await?;
            return match one {
                Value::Array(_) => redis::from_redis_value(one).map_err(|e| RedisError::Protocol(e.to_string())),
                single => Ok(vec![
                    redis::from_redis_value(single).map_err(|e| RedisError::Protocol(e.to_string()))?
                ]),
            };
        }
        let mut invs = Vec::with_capacity(rkeys.len());
        for (i, k) in rkeys.iter().enumerate() {
            let mut inv = script.prepare_invoke();
            inv.key(k);
            args(&mut inv, i..i + 1);
            invs.push(inv);
        }
        let answers = self
            .bounded(|c| async move {
                let calls: Vec<_> = invs
                    .into_iter()
                    .map(|inv| {
                        let mut c = c.clone();
                        tokio::spawn(async move { inv.invoke_async::<Value>(&mut c).await })
                    })
                    .collect();
                let mut out = Vec::with_capacity(calls.len());
                for call in calls {
                    let answered = call
                        .await
                        .map_err(|e| redis::RedisError::from((ErrorKind::Io, "claim task", e.to_string())))?;
                    out.push(answered?);
                }
                Ok(out)
            })
            .await?;
        // Each run answered as for a batch of one: take its single element.
        answers
            .into_iter()
            .map(|v| match v {
                Value::Array(mut items) if items.len() == 1 => items.pop().unwrap_or(Value::Nil),
                other => other,
            })
            .map(|v| redis::from_redis_value(v).map_err(|e| RedisError::Protocol(e.to_string())))
            .collect()
    }
}
