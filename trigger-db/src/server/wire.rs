//! The protobuf form of the threshold configuration (`ConfigureThresholds`,
//! `ListThresholds`): trigger-db's own types, next to the gRPC adapter. The
//! trigger model's wire form is `trigger_model::wire`.

use trigger_proto::v1 as pb;

use crate::{
    model::{LinkParameterType, LinkType, ValidationError, check_name},
    threshold::{Change, Direction, Scope, Threshold},
};

impl Threshold {
    pub fn to_wire(&self) -> pb::Threshold {
        pb::Threshold {
            id: self.id,
            scope: Some(match &self.scope {
                Scope::Interface(i) => pb::threshold::Scope::Interface(i.clone()),
                Scope::LinkType(t) => pb::threshold::Scope::LinkType(t.to_wire()),
            }),
            parameter: self.parameter.to_wire(),
            value: Some(self.value),
            direction: match self.direction {
                Direction::Above => pb::ThresholdDirection::Above,
                Direction::Below => pb::ThresholdDirection::Below,
            } as i32,
            hysteresis: self.hysteresis,
            action: if self.one_shot {
                pb::ThresholdAction::OneShot
            } else {
                pb::ThresholdAction::Normal
            } as i32,
            spent: self.spent,
        }
    }
}

/// Checks one entry of a ConfigureThresholds request (`field` is its path).
pub fn change_from_wire(w: &pb::Threshold, field: &str) -> Result<Change, ValidationError> {
    let f = |name: &str| format!("{field}.{name}");
    let scope = match &w.scope {
        Some(pb::threshold::Scope::Interface(i)) => {
            check_name(i, f("interface"))?;
            if i.is_empty() {
                return Err(ValidationError::new(f("interface"), "is empty"));
            }
            Scope::Interface(i.clone())
        }
        Some(pb::threshold::Scope::LinkType(t)) => {
            Scope::LinkType(LinkType::from_wire(*t, f("link_type"))?)
        }
        None => {
            return Err(ValidationError::new(
                f("scope"),
                "needs an interface or a link_type",
            ));
        }
    };
    let parameter = LinkParameterType::from_wire(w.parameter, f("parameter"))?;
    if let Some(v) = w.value
        && !v.is_finite()
    {
        return Err(ValidationError::new(f("value"), "not a finite number"));
    }
    match pb::ThresholdAction::try_from(w.action) {
        Ok(pb::ThresholdAction::Cancel) => {
            return Ok(Change::Cancel {
                scope,
                parameter,
                value: w.value,
            });
        }
        Ok(pb::ThresholdAction::Normal | pb::ThresholdAction::OneShot) => {}
        Ok(pb::ThresholdAction::Unspecified) => {
            return Err(ValidationError::new(f("action"), "must be set"));
        }
        Err(_) => {
            return Err(ValidationError::new(
                f("action"),
                format!("unknown value {}", w.action),
            ));
        }
    }
    let value = w
        .value
        .ok_or_else(|| ValidationError::new(f("value"), "is required"))?;
    let direction = match pb::ThresholdDirection::try_from(w.direction) {
        Ok(pb::ThresholdDirection::Above) => Direction::Above,
        Ok(pb::ThresholdDirection::Below) => Direction::Below,
        Ok(pb::ThresholdDirection::Unspecified) => {
            return Err(ValidationError::new(f("direction"), "must be set"));
        }
        Err(_) => {
            return Err(ValidationError::new(
                f("direction"),
                format!("unknown value {}", w.direction),
            ));
        }
    };
    if !w.hysteresis.is_finite() || w.hysteresis < 0.0 {
        return Err(ValidationError::new(
            f("hysteresis"),
            format!("{} is not a finite number >= 0", w.hysteresis),
        ));
    }
    Ok(Change::Set(Threshold {
        id: 0,
        scope,
        parameter,
        value,
        direction,
        hysteresis: w.hysteresis,
        one_shot: w.action == pb::ThresholdAction::OneShot as i32,
        spent: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configuration_names_the_field() {
        let w = pb::Threshold {
            scope: Some(pb::threshold::Scope::Interface("wlan0".into())),
            parameter: pb::LinkParameterType::SignalStrength as i32,
            value: Some(40.0),
            direction: pb::ThresholdDirection::Below as i32,
            hysteresis: -1.0,
            action: pb::ThresholdAction::Normal as i32,
            ..Default::default()
        };
        assert_eq!(
            change_from_wire(&w, "thresholds[0]").unwrap_err().field,
            "thresholds[0].hysteresis"
        );
        let mut w2 = w.clone();
        w2.hysteresis = 1.0;
        w2.parameter = 99;
        assert_eq!(change_from_wire(&w2, "t").unwrap_err().field, "t.parameter");
        let mut w3 = w.clone();
        w3.hysteresis = 0.0;
        w3.scope = None;
        assert_eq!(change_from_wire(&w3, "t").unwrap_err().field, "t.scope");
        let mut w4 = w;
        w4.hysteresis = 0.0;
        w4.value = None;
        assert_eq!(change_from_wire(&w4, "t").unwrap_err().field, "t.value");
    }
}
