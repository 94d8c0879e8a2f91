/* placeholder main replaced by the CLI helper */
#include <stdio.h>
int main(void) { puts("verity"); return 0; }
