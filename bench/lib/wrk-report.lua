-- wrk script for bench/run: prints the run's summary as one JSON line (prefixed WRKJSON)
-- after wrk's own report, so the numbers are taken from wrk's histogram, not its rounded text.
done = function(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'WRKJSON {"requests":%d,"seconds":%.3f,"bytes":%d,"req_per_s":%.1f,' ..
    '"latency":{"mean_us":%.1f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, seconds, summary.bytes, summary.requests / seconds,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
