#!/bin/bash -eu
# ClusterFuzzLite runs $SRC/build.sh; the build itself is shared with
# OSS-Fuzz: oss-fuzz/build.sh in the checkout.
exec bash -eu "$SRC/pytie/oss-fuzz/build.sh"
