/* The release version every Verity program reports (--version, the
 * verity_build_info metric). */
#ifndef VERITY_VERSION_H
#define VERITY_VERSION_H

#define VERITY_VERSION_STRING "0.1.0"

#endif
