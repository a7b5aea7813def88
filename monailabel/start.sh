#!/usr/bin/env bash
# Start MONAI Label with the lesionseg app (monailabel/lesionseg_app) on 127.0.0.1:8000 by default.
#   monailabel/start.sh --studies DIR [--host ADDRESS] [--port PORT] [--conf KEY VALUE ...]
# Any `monailabel start_server` option passes through; `--host 0.0.0.0` serves every network interface
# (MONAI Label has no authentication unless configured: see docs/monailabel.md). MONAILABEL names the
# `monailabel` command to run (default: the one on PATH).
set -euo pipefail
app="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lesionseg_app"
host=(--host 127.0.0.1)
for arg in "$@"; do
    case "$arg" in
        -i | --host | --host=*) host=() ;;
    esac
done
# the image formats the bundles read, in either case (MONAI Label lists .png, .jpg and .tif, case-sensitively, and
# would leave other images out of the datastore); a list set in the environment wins
exts='"*.png","*.jpg","*.jpeg","*.bmp","*.tif","*.tiff","*.PNG","*.JPG","*.JPEG","*.BMP","*.TIF","*.TIFF"'
export MONAI_LABEL_DATASTORE_FILE_EXT="${MONAI_LABEL_DATASTORE_FILE_EXT:-[$exts]}"
exec "${MONAILABEL:-monailabel}" start_server --app "$app" "${host[@]}" "$@"
