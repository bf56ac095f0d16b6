#ifndef CALC_H
#define CALC_H
int calc_add(int a, int b);
int calc_clamp(int value, int low, int high);
const char *calc_sign(int value);
#endif
