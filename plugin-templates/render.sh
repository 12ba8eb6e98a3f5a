#!/bin/sh
# Renders a template the way `cargo generate` would, without installing
# cargo-generate (CI uses this; vendors may use either):
#
#   plugin-templates/render.sh TEMPLATE DEST PROJECT_NAME DRIVER_NAME [BERTH_PATH]
#
# e.g. plugin-templates/render.sh volume-so /tmp/acme-vol acme-vol acme
# BERTH_PATH defaults to this checkout.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 4 ] || { echo "usage: $0 TEMPLATE DEST PROJECT_NAME DRIVER_NAME [BERTH_PATH]" >&2; exit 2; }
template=$here/$1 dest=$2 project=$3 driver=$4 berth=${5:-$(dirname "$here")}
[ -f "$template/cargo-generate.toml" ] || { echo "$0: no template at $template" >&2; exit 2; }
crate=$(printf %s "$project" | tr - _)
mkdir -p "$dest"
(cd "$template" && find . -type f ! -name cargo-generate.toml ! -path './target/*') | while read -r f; do
    mkdir -p "$dest/$(dirname "$f")"
    sed -e "s|{{project-name}}|$project|g" -e "s|{{crate_name}}|$crate|g" \
        -e "s|{{driver_name}}|$driver|g" -e "s|{{berth_path}}|$berth|g" "$template/$f" > "$dest/$f"
done
echo "$dest"
