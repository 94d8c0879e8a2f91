/*
 * latplot: latency distributions as SVG (see latplot.h). Plain fprintf, no
 * library: the document is a few hundred elements.
 */
#include "tools/latplot.h"

#include <math.h>
#include <string.h>

#define PW 540.0 /* panel width */
#define PH 380.0 /* panel height */
#define ML 64.0  /* margins inside a panel */
#define MR 16.0
#define MT 44.0
#define MB 56.0

static const char *const colors[] = {"#d62728", "#1f77b4", "#2ca02c", "#9467bd",
                                     "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"};

double latplot_quantile_us(const int64_t *sorted_ns, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)ceil(q * (double)n);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return (double)sorted_ns[k - 1] / 1e3;
}

/* Escapes text for SVG character data. */
static void put_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else
            fputc(*s, f);
    }
}

struct axes {
    double x0, y0;           /* panel origin */
    double xmax;             /* nines at the right edge */
    double ylo, yhi;         /* log10 of the us range */
};

static double px(const struct axes *a, double nines)
{
    return a->x0 + ML + (PW - ML - MR) * (nines / a->xmax);
}

static double py(const struct axes *a, double us)
{
    double l = log10(us < 1 ? 1 : us);
    if (l < a->ylo)
        l = a->ylo;
    if (l > a->yhi)
        l = a->yhi;
    return a->y0 + PH - MB - (PH - MT - MB) * ((l - a->ylo) / (a->yhi - a->ylo));
}

static double nines_of(double q, size_t n)
{
    double rest = 1.0 - q;
    double floor_rest = n ? 1.0 / (double)n : 1e-6;
    if (rest < floor_rest)
        rest = floor_rest;
    return -log10(rest);
}

static void series_range(const struct latplot_series *s, double *lo, double *hi)
{
    if (s->sorted_ns) {
        *lo = latplot_quantile_us(s->sorted_ns, s->n, 0.01);
        *hi = s->n ? (double)s->sorted_ns[s->n - 1] / 1e3 : 1;
    } else {
        *lo = s->p50_us;
        *hi = s->max_us > 0 ? s->max_us : s->p999_us;
    }
}

static void panel(FILE *f, const struct latplot_panel *p, double x0)
{
    struct axes a = {.x0 = x0, .y0 = 0, .xmax = 4};
    double lo = 1e12, hi = 1;
    for (size_t i = 0; i < p->ns; i++) {
        double l, h;
        series_range(&p->s[i], &l, &h);
        if (l > 0 && l < lo)
            lo = l;
        if (h > hi)
            hi = h;
        double nx = p->s[i].n ? log10((double)p->s[i].n) : 4;
        if (nx > a.xmax)
            a.xmax = nx;
    }
    if (lo > hi)
        lo = 10;
    a.ylo = floor(log10(lo > 1 ? lo : 1));
    a.yhi = ceil(log10(hi > 1 ? hi : 1));
    if (a.yhi <= a.ylo)
        a.yhi = a.ylo + 1;
    a.xmax = ceil(a.xmax);

    fprintf(f, "<g font-family=\"sans-serif\" font-size=\"11\">\n");
    fprintf(f, "<text x=\"%.1f\" y=\"20\" font-size=\"14\" font-weight=\"bold\">", x0 + ML);
    put_text(f, p->title);
    fputs("</text>\n", f);
    /* grid: decades (and 2x, 5x) of us; nines */
    for (double d = a.ylo; d <= a.yhi + 1e-9; d += 1) {
        for (int m = 1; m <= 5; m += (m == 1 ? 1 : 3)) {
            double us = pow(10, d) * m;
            if (log10(us) > a.yhi + 1e-9)
                break;
            double y = py(&a, us);
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n",
                    px(&a, 0), y, px(&a, a.xmax), y, m == 1 ? "#bbb" : "#eee");
            char lab[32];
            if (us >= 1000)
                snprintf(lab, sizeof lab, "%g ms", us / 1000);
            else
                snprintf(lab, sizeof lab, "%g us", us);
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                    px(&a, 0) - 4, y + 4, lab);
        }
    }
    static const char *const xl[] = {"0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"};
    for (int k = 0; k <= (int)a.xmax && k < 7; k++) {
        double x = px(&a, k);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x,
                py(&a, pow(10, a.ylo)), x, py(&a, pow(10, a.yhi)));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x,
                a.y0 + PH - MB + 16, xl[k]);
    }
    double x50 = px(&a, log10(2.0));
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\" "
               "stroke-dasharray=\"2,3\"/>\n", x50, py(&a, pow(10, a.ylo)), x50, py(&a, pow(10, a.yhi)));
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#888\">p50</text>\n", x50,
            py(&a, pow(10, a.yhi)) - 4);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">percentile (log scale of 1 - q)</text>\n",
            px(&a, a.xmax / 2), a.y0 + PH - MB + 34);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#444\"/>\n",
            px(&a, 0), py(&a, pow(10, a.yhi)), px(&a, a.xmax) - px(&a, 0),
            py(&a, pow(10, a.ylo)) - py(&a, pow(10, a.yhi)));

    for (size_t i = 0; i < p->ns; i++) {
        const struct latplot_series *s = &p->s[i];
        const char *col = colors[i % (sizeof colors / sizeof colors[0])];
        if (s->sorted_ns && s->n) {
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
            double xend = log10((double)s->n);
            for (double x = 0; x < xend + 0.01; x += 0.02) {
                double xx = x > xend ? xend : x;
                double q = 1.0 - pow(10, -xx);
                fprintf(f, "%.1f,%.1f ", px(&a, xx), py(&a, latplot_quantile_us(s->sorted_ns, s->n, q)));
            }
            fputs("\"/>\n", f);
        } else {
            double q[4] = {0.5, 0.99, 0.999, 1.0};
            double v[4] = {s->p50_us, s->p99_us, s->p999_us, s->max_us};
            size_t n = s->n ? s->n : 100000;
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" "
                       "stroke-dasharray=\"5,4\" points=\"", col);
            for (int k = 0; k < 4; k++)
                if (v[k] > 0)
                    fprintf(f, "%.1f,%.1f ", px(&a, nines_of(q[k], n)), py(&a, v[k]));
            fputs("\"/>\n", f);
            for (int k = 0; k < 4; k++)
                if (v[k] > 0)
                    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n",
                            px(&a, nines_of(q[k], n)), py(&a, v[k]), col);
        }
        double ly = MT + 14 + 15.0 * (double)i;
        double lx = px(&a, 0) + 8;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                   "stroke-width=\"2\"%s/>\n", lx, ly - 4, lx + 18, ly - 4, col,
                s->sorted_ns ? "" : " stroke-dasharray=\"5,4\"");
        double p50 = s->sorted_ns ? latplot_quantile_us(s->sorted_ns, s->n, 0.5) : s->p50_us;
        double p99 = s->sorted_ns ? latplot_quantile_us(s->sorted_ns, s->n, 0.99) : s->p99_us;
        double p999 = s->sorted_ns ? latplot_quantile_us(s->sorted_ns, s->n, 0.999) : s->p999_us;
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", lx + 24, ly);
        put_text(f, s->name);
        fprintf(f, ": p50 %.0f, p99 %.0f, p999 %.0f us</text>\n", p50, p99, p999);
    }
    fputs("</g>\n", f);
}

void latplot_svg(FILE *f, const char *title, const struct latplot_panel *p, size_t np)
{
    double w = PW * (double)(np ? np : 1), h = PH + 24;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            w, h, w, h);
    for (size_t i = 0; i < np; i++)
        panel(f, &p[i], PW * (double)i);
    fprintf(f, "<text x=\"8\" y=\"%.0f\" font-family=\"sans-serif\" font-size=\"11\" fill=\"#555\">", h - 8);
    put_text(f, title);
    fputs("</text>\n</svg>\n", f);
}
