// zstd (Debian: libzstd-dev): the entropy coder of Graft's stored blob encodings (issue 27).
#include <zstd.h>
