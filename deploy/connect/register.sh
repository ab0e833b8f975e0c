#!/bin/sh
# Create or update Kafka Connect connectors from JSON files.
#
# Each file is a flat connector config whose "name" equals the file name without .json;
# it is sent with PUT /connectors/<name>/config, which creates the connector or updates
# it in place, so running this again is safe.
#
# usage: CONNECT_URL=http://localhost:8083 sh deploy/connect/register.sh FILE.json...
set -eu

url="${CONNECT_URL:-http://localhost:8083}"

if [ "$#" -eq 0 ]; then
  echo "usage: $0 CONNECTOR.json..." >&2
  exit 2
fi

tries=0
until curl -fsS -o /dev/null "$url/connector-plugins"; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "Kafka Connect at $url did not answer" >&2
    exit 1
  fi
  sleep 2
done

for file in "$@"; do
  name=$(basename "$file" .json)
  echo "PUT $url/connectors/$name/config  <- $file"
  # --fail-with-body: on a 4xx/5xx show Connect's error message, then stop.
  curl -sS --fail-with-body -X PUT -H 'Content-Type: application/json' \
    --data @"$file" "$url/connectors/$name/config" > /dev/null
  echo
done

sleep 5
for file in "$@"; do
  name=$(basename "$file" .json)
  curl -sS "$url/connectors/$name/status"
  echo
done
