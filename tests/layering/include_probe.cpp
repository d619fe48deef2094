// Compiled as a source of one layer by tests/layering/include_probe_test.sh (the targets
// layering_probe_*, CMakeLists.txt): includes LOOM_PROBE_HEADER, which that layer may or may not see.
#include LOOM_PROBE_HEADER

int loom_include_probe() { return 0; }
