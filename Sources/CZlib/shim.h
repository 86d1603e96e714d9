// zlib (Debian: zlib1g-dev): gzread reads gzipped and plain files alike.
#include <zlib.h>
