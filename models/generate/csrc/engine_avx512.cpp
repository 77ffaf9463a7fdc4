// The AVX-512 variant (F/BW/VL/DQ + BF16), built with those flags; loaded only where the CPU has them.
#define ENGINE_MODULE _engine_avx512
#define ENGINE_AVX512 1
#include "engine_impl.h"
