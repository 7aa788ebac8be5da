#!/bin/sh
# The stand-in for a long-running service on a "light" simulated server (benchmarks only,
# RealHostProvider({ standInServices: true })): socat runs it once per connection. It reads the
# request head and answers 200 {"status":"ok"} to anything, so health checks pass without the
# real service's memory (hundreds of servers on one machine).
cr=$(printf '\r')
while IFS= read -r line; do
  case "$line" in '' | "$cr") break ;; esac
done
body='{"status":"ok"}'
printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "${#body}" "$body"
