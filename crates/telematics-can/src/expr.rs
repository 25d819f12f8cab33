//! Tiny arithmetic expression language for Kuksa-style `transform.math` (e.g. `floor((x*40)-100)`).
//!
//! Supports numbers, the variable `x`, `+ - * /`, unary minus, parentheses and the functions
//! `floor`, `ceil`, `abs`, `round`. Parsed once at load time; nesting is depth-limited.

use crate::error::CanError;

const MAX_DEPTH: usize = 64;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Numeric literal.
    Num(f64),
    /// The input value.
    X,
    /// Negation.
    Neg(Box<Expr>),
    /// Binary operation.
    Bin(Box<Expr>, Op, Box<Expr>),
    /// Function call.
    Call(Func, Box<Expr>),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

/// Supported functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// `floor`
    Floor,
    /// `ceil`
    Ceil,
    /// `abs`
    Abs,
    /// `round`
    Round,
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
    src: &'a str,
}

impl P<'_> {
    fn err(&self, reason: &str) -> CanError {
        CanError::Expression {
            expr: self.src.to_string(),
            reason: format!("{reason} at offset {}", self.i),
        }
    }
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }
    fn expr(&mut self, d: usize) -> Result<Expr, CanError> {
        if d > MAX_DEPTH {
            return Err(self.err("too deeply nested"));
        }
        let mut l = self.term(d + 1)?;
        while let Some(c @ (b'+' | b'-')) = self.peek() {
            self.i += 1;
            let r = self.term(d + 1)?;
            l = Expr::Bin(
                Box::new(l),
                if c == b'+' { Op::Add } else { Op::Sub },
                Box::new(r),
            );
        }
        Ok(l)
    }
    fn term(&mut self, d: usize) -> Result<Expr, CanError> {
        let mut l = self.unary(d + 1)?;
        while let Some(c @ (b'*' | b'/')) = self.peek() {
            self.i += 1;
            let r = self.unary(d + 1)?;
            l = Expr::Bin(
                Box::new(l),
                if c == b'*' { Op::Mul } else { Op::Div },
                Box::new(r),
            );
        }
        Ok(l)
    }
    fn unary(&mut self, d: usize) -> Result<Expr, CanError> {
        if d > MAX_DEPTH {
            return Err(self.err("too deeply nested"));
        }
        if self.peek() == Some(b'-') {
            self.i += 1;
            return Ok(Expr::Neg(Box::new(self.unary(d + 1)?)));
        }
        self.primary(d + 1)
    }
    fn primary(&mut self, d: usize) -> Result<Expr, CanError> {
        match self.peek() {
            Some(b'(') => {
                self.i += 1;
                let e = self.expr(d + 1)?;
                if self.peek() != Some(b')') {
                    return Err(self.err("expected ')'"));
                }
                self.i += 1;
                Ok(e)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
                {
                    self.i += 1;
                }
                let t = self.src.get(start..self.i).unwrap_or("");
                t.parse::<f64>()
                    .map(Expr::Num)
                    .map_err(|_| self.err("bad number"))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    self.i += 1;
                }
                let name = self.src.get(start..self.i).unwrap_or("");
                let f = match name {
                    "x" => return Ok(Expr::X),
                    "floor" => Func::Floor,
                    "ceil" => Func::Ceil,
                    "abs" => Func::Abs,
                    "round" => Func::Round,
                    _ => return Err(self.err("unknown identifier")),
                };
                if self.peek() != Some(b'(') {
                    return Err(self.err("expected '('"));
                }
                self.i += 1;
                let e = self.expr(d + 1)?;
                if self.peek() != Some(b')') {
                    return Err(self.err("expected ')'"));
                }
                self.i += 1;
                Ok(Expr::Call(f, Box::new(e)))
            }
            _ => Err(self.err("unexpected token")),
        }
    }
}

impl Expr {
    /// Parse an expression.
    pub fn parse(src: &str) -> Result<Expr, CanError> {
        let mut p = P {
            s: src.as_bytes(),
            i: 0,
            src,
        };
        let e = p.expr(0)?;
        if p.peek().is_some() {
            return Err(p.err("trailing input"));
        }
        Ok(e)
    }

    /// Evaluate with `x` bound.
    pub fn eval(&self, x: f64) -> f64 {
        match self {
            Expr::Num(n) => *n,
            Expr::X => x,
            Expr::Neg(e) => -e.eval(x),
            Expr::Bin(l, op, r) => {
                let (a, b) = (l.eval(x), r.eval(x));
                match op {
                    Op::Add => a + b,
                    Op::Sub => a - b,
                    Op::Mul => a * b,
                    Op::Div => a / b,
                }
            }
            Expr::Call(f, e) => {
                let v = e.eval(x);
                match f {
                    Func::Floor => v.floor(),
                    Func::Ceil => v.ceil(),
                    Func::Abs => v.abs(),
                    Func::Round => v.round(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kuksa_expressions() {
        let e = Expr::parse("floor((x*40)-100)").expect("parse");
        assert_eq!(e.eval(3.0), 20.0);
        assert_eq!(e.eval(0.01), -100.0);
        assert_eq!(Expr::parse("floor(x+0.5)").expect("p").eval(-1.4), -1.0);
        assert_eq!(Expr::parse("floor(abs(x/5))").expect("p").eval(-26.0), 5.0);
        assert_eq!(Expr::parse("(x+100)/40").expect("p").eval(20.0), 3.0);
        assert_eq!(Expr::parse("-x * 2 - -1").expect("p").eval(2.0), -3.0);
    }

    #[test]
    fn rejects_bad() {
        for bad in ["", "x +", "foo(x)", "((x)", "x)", "1..2", "floor x"] {
            let e = Expr::parse(bad).err().map(|e| e.code());
            assert_eq!(e, Some("expression_invalid"), "{bad}");
        }
        let deep = "(".repeat(10_000) + "x" + &")".repeat(10_000);
        assert!(Expr::parse(&deep).is_err());
    }
}
