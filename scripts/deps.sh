#!/usr/bin/env bash
# Installs what the build and the tests need from Debian's packages, when missing:
# a C compiler and make (mimalloc's and zlib-ng's C sources; rustc links with cc too), cmake
# (Pingora's zlib-ng build) and redis-server (the Redis dedupe tests).
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || need+=(make)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ "${#need[@]}" -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${need[*]} (Debian packages)" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
