/* How many threads the last parallel region of the kernels ran on: each kernel takes its thread
 * count as an argument (the runtime's choice, lmatlas.runtime.threads), and the first task of
 * each region records the team it got, so that a test can check the two agree. */
#include <omp.h>

int lmatlas_last_team = 0;

int lmatlas_threads_used(void) { return lmatlas_last_team; }

void lmatlas_note_team(void) { lmatlas_last_team = omp_get_num_threads(); }
