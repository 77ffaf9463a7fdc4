// The AVX2 + FMA variant, built with those flags; loaded only where the CPU has them.
#define ENGINE_MODULE _engine_avx2
#define ENGINE_AVX2 1
#include "engine_impl.h"
