#include <stdio.h>
#include "packtrack.h"
int main(void)
{
    if (pt_init() != 0) return 1;
    printf("packtrackd %s\n", pt_version());
    return 0;
}
